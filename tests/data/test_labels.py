import json

import pytest

from imat_kit.data.labels import format_class_id, load_labels, parse_attributes_ids, parse_class_id
from imat_kit.errors import KitError


def test_shipped_labels_are_the_2019_file():
    ours = load_labels()
    assert ours.year == 2019 and ours.source.endswith("label_descriptions_2019.json")
    assert ours.num_classes == 46 and len(ours.attributes) == 92
    assert sorted(ours.attribute_ids) == list(range(92))
    assert ours.class_names[:2] == ("shirt, blouse", "top, t-shirt, sweatshirt")
    assert ours.category_name(31) == "sleeve" and ours.attribute_name(91) == "no waistline"


def test_both_years_ship_the_same_categories():
    a, b = load_labels(year=2019), load_labels(year=2020)
    assert a.class_names == b.class_names and len(b.attributes) == 294
    with pytest.raises(KitError, match="no label file is shipped for 2021"):
        load_labels(year=2021)


def test_2020_file_non_contiguous_attributes(tmp_path):
    lab = load_labels(year=2020)
    assert lab.year == 2020 and lab.attribute_name(340) == "plant"
    # read from a file, its year is recognised by the attribute ids alone (no info block)
    p = tmp_path / "label_descriptions.json"
    p.write_text(json.dumps(lab.to_json() | {"info": {}}))
    assert load_labels(p).year == 2020
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
    with pytest.raises(KitError, match=r"bad.json:1: label file is not valid JSON \(line 1"):
        load_labels(bad)
    bad.write_text(json.dumps({"categories": [{"id": 0, "name": "a"}, {"id": 0, "name": "b"}],
                               "attributes": [{"id": 0, "name": "x"}]}))
    with pytest.raises(KitError, match="duplicate categories id 0"):
        load_labels(bad)
    bad.write_text(json.dumps({"categories": [], "attributes": []}))
    with pytest.raises(KitError, match="'categories' must be a non-empty list"):
        load_labels(bad)
