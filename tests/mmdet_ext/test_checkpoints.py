"""Every family's COCO checkpoint loads into the kit's config (issue 29 item 5): each family's
stock mmdet COCO model (its own mmdet config, random weights), saved in the model zoo's layout,
loaded as ``load_from`` does (``IMatRunner.load_checkpoint``): exactly the class-dependent layers
(and the attribute head, which COCO has not) keep their fresh initialisation, HTC's semantic
branch (which the kit's HTC has not) is left out, all named in one log line, and every other
tensor equals the checkpoint's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tests.helpers import REPO

RCNN = ["roi_head.bbox_head.fc_cls", "roi_head.bbox_head.fc_reg", "roi_head.mask_head.conv_logits"]
CASCADE = [f"roi_head.bbox_head.{i}.fc_cls" for i in range(3)] + \
    [f"roi_head.mask_head.{i}.conv_logits" for i in range(3)]
ATTRIBUTE = ["roi_head.attribute_head"]
SEMANTIC = ["roi_head.semantic_head"]
RTM = [f"bbox_head.rtm_cls.{i}" for i in range(3)]
#: kit config → (stock mmdet COCO config, modules left fresh, checkpoint modules left out)
FAMILIES = {
    "maskrcnn_r50_imat": ("mask_rcnn/mask-rcnn_r50_fpn_ms-poly-3x_coco.py", RCNN, []),
    "maskrcnn_x101_imat": ("mask_rcnn/mask-rcnn_x101-64x4d_fpn_ms-poly_3x_coco.py", RCNN, []),
    "maskrcnn_r50_imat_attr2020": ("mask_rcnn/mask-rcnn_r50_fpn_ms-poly-3x_coco.py",
                                   RCNN + ATTRIBUTE, []),
    "cascade_maskrcnn_r50_imat": ("cascade_rcnn/cascade-mask-rcnn_r50_fpn_20e_coco.py",
                                  CASCADE, []),
    "cascade_maskrcnn_r50_imat_attr": ("cascade_rcnn/cascade-mask-rcnn_r50_fpn_20e_coco.py",
                                       CASCADE + ATTRIBUTE, []),
    "htc_x101_dcn_imat": ("htc/htc_x101-64x4d-dconv-c3-c5_fpn_ms-400-1400-16xb1-20e_coco.py",
                          CASCADE, SEMANTIC),
    "htc_x101_dcn_imat_attr": ("htc/htc_x101-64x4d-dconv-c3-c5_fpn_ms-400-1400-16xb1-20e_coco.py",
                               CASCADE + ATTRIBUTE, SEMANTIC),
    "rtmdet_ins_s_imat": ("rtmdet/rtmdet-ins_s_8xb32-300e_coco.py", RTM, []),
    "rtmdet_ins_l_imat": ("rtmdet/rtmdet-ins_l_8xb32-300e_coco.py", RTM, []),
    "mask2former_r50_imat": ("mask2former/mask2former_r50_8xb2-lsj-50e_coco.py",
                             ["panoptic_head.cls_embed"], []),
    "yolact_r50_imat": ("yolact/yolact_r50_1xb8-55e_coco.py",
                        ["bbox_head.conv_cls", "mask_head.segm_branch.segm_conv"], []),
}


def _under(key: str, modules: list[str]) -> bool:
    return any(key == m or key.startswith(m + ".") for m in modules)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_coco_checkpoint_loads_into_the_kit_config(name, prepared, tmp_path):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.hub import get_config

    import imat_kit.mmdet_ext  # noqa: F401
    from imat_kit.mmdet_ext.config import load_config
    from imat_kit.mmdet_ext.runner import IMatRunner

    stock_cfg, fresh_modules, left_out = FAMILIES[name]
    register_all_modules()
    torch.manual_seed(0)
    coco = MODELS.build(get_config("mmdet::" + stock_cfg, pretrained=False).model)
    path = tmp_path / "coco.pth"  # the model zoo's layout
    torch.save({"meta": {"mmdet_version": "3.3.0", "CLASSES": ["c"] * 80},
                "state_dict": coco.state_dict()}, path)
    torch.manual_seed(1)
    model = MODELS.build(load_config(REPO / "configs" / f"{name}.py", fold=0,
                                     data_root=prepared).model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lines = []
    runner = SimpleNamespace(model=model, call_hook=lambda *a, **k: None,
                             logger=SimpleNamespace(info=lines.append))
    IMatRunner.load_checkpoint(runner, str(path))
    assert len(lines) == 1 and "\n" not in lines[0]
    after, src = model.state_dict(), coco.state_dict()
    fresh = [k for k in after if k not in src or src[k].shape != after[k].shape]
    assert fresh and all(_under(k, fresh_modules) for k in fresh), fresh
    assert all(any(_under(k, [m]) for k in fresh) for m in fresh_modules)  # each one named
    for k in after:  # fresh keys keep their initialisation, the rest is the checkpoint's
        assert torch.equal(after[k], before[k] if k in fresh else src[k]), k
    unused = [k for k in src if k not in after]
    assert all(_under(k, left_out) for k in unused) and bool(unused) == bool(left_out)
    for m in fresh_modules + left_out:
        assert m in lines[0], (m, lines[0])
