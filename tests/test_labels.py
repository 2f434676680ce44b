import json

import pytest

from imat_kit.errors import KitError
from imat_kit.labels import format_class_id, load_labels, parse_attributes_ids, parse_class_id


def test_shipped_labels_are_the_2019_file(shared_data):
    ours = load_labels()
    real = json.loads((shared_data / "label_descriptions_2019.json").read_text())
    assert ours.year == 2019
    assert ours.num_classes == 46 and len(ours.attributes) == 92
    assert [c["name"] for c in real["categories"]] == list(ours.class_names)
    assert ours.category_name(31) == "sleeve"


def test_2020_file_non_contiguous_attributes(shared_data):
    lab = load_labels(shared_data / "label_descriptions_2020.json")
    assert lab.year == 2020
    assert lab.num_classes == 46 and len(lab.attributes) == 294
    ids = sorted(lab.attribute_ids)
    assert ids[-1] == 340 and ids != list(range(294))
    gap = next(i for i in range(341) if i not in lab.attribute_ids)
    with pytest.raises(KitError, match=f"unknown attribute id {gap}"):
        parse_attributes_ids(str(gap), lab)


def test_parse_class_id_forms():
    lab = load_labels()
    assert parse_class_id("6_28_77", lab) == (6, (28, 77))
    assert parse_class_id("6", lab) == (6, ())
    assert parse_class_id(" 6_77_28 ") == (6, (28, 77))
    assert parse_attributes_ids("115,136,143") == (115, 136, 143)
    assert parse_attributes_ids("") == ()
    assert parse_attributes_ids(float("nan")) == ()
    assert format_class_id(6, (77, 28)) == "6_28_77"
    assert format_class_id(23) == "23"


@pytest.mark.parametrize("text,msg", [
    ("46", "unknown category id 46"),
    ("6_92", "unknown attribute id 92"),
    ("x", "category 'x' is not a non-negative integer"),
    ("6_", "attribute '' is not a non-negative integer"),
    ("-1", "category '-1'"),
    ("6_2.5", "attribute '2.5'"),
])
def test_parse_class_id_rejects(text, msg):
    with pytest.raises(KitError, match=msg) as e:
        parse_class_id(text, load_labels(), file="train.csv", row=7)
    assert str(e.value).startswith("train.csv:7: ")


def test_load_labels_errors(tmp_path):
    with pytest.raises(KitError, match="cannot read label file"):
        load_labels(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(KitError, match=r"bad.json: not valid JSON \(line 1"):
        load_labels(bad)
    bad.write_text(json.dumps({"categories": [{"id": 0, "name": "a"}, {"id": 0, "name": "b"}],
                               "attributes": [{"id": 0, "name": "x"}]}))
    with pytest.raises(KitError, match="duplicate categories id 0"):
        load_labels(bad)
    bad.write_text(json.dumps({"categories": [], "attributes": []}))
    with pytest.raises(KitError, match="'categories' must be a non-empty list"):
        load_labels(bad)
