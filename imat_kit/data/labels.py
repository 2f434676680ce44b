"""Categories and attributes of iMaterialist Fashion, and the ``ClassId`` forms that use them.

One loader for both competition years:

* 2019: ``label_descriptions.json`` with ``categories`` 0–45 and ``attributes`` 0–91; a
  ``train.csv`` ``ClassId`` is ``"6"`` or ``"6_28_77"`` (category 6 with attributes 28 and 77).
* 2020: the same 46 categories, 294 attributes whose ids are **not contiguous** (0…340);
  ``ClassId`` is the category alone and a separate ``AttributesIds`` column holds
  ``"115,136,143"`` or nothing.

Both years' files ship inside the package (``imat_kit/data``); 2019 is the default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from imat_kit import fields
from imat_kit.errors import KitError

#: the label files shipped inside the package, by competition year
SHIPPED_LABELS = {2019: "label_descriptions_2019.json", 2020: "label_descriptions_2020.json"}
DEFAULT_LABELS = SHIPPED_LABELS[2019]


@dataclass(frozen=True)
class Labels:
    """The label set of one competition year.

    ``categories`` and ``attributes`` are tuples of ``{"id", "name", "supercategory", "level"}``
    dicts sorted by id; ``category_ids``/``attribute_ids`` are frozensets for membership checks.
    """

    categories: tuple[dict, ...]
    attributes: tuple[dict, ...]
    year: int | None = None
    source: str = ""
    category_ids: frozenset[int] = field(init=False, repr=False)
    attribute_ids: frozenset[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "category_ids", frozenset(c["id"] for c in self.categories))
        object.__setattr__(self, "attribute_ids", frozenset(a["id"] for a in self.attributes))

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def num_attributes(self) -> int:
        return len(self.attributes)

    @property
    def attribute_id_list(self) -> tuple[int, ...]:
        """Attribute ids in order: position i of a model's attribute vector is this id.
        The one map between contiguous indices and the (2020: non-contiguous) ids."""
        return tuple(a["id"] for a in self.attributes)

    def attribute_index(self) -> dict[int, int]:
        """Attribute id → its position in a model's attribute vector."""
        return {aid: i for i, aid in enumerate(self.attribute_id_list)}

    @property
    def class_names(self) -> tuple[str, ...]:
        """Category names in id order: the label order of every model config."""
        return tuple(c["name"] for c in self.categories)

    def category_name(self, cid: int) -> str:
        return self._by_id(self.categories)[cid]["name"]

    def attribute_name(self, aid: int) -> str:
        return self._by_id(self.attributes)[aid]["name"]

    @staticmethod
    def _by_id(items: tuple[dict, ...]) -> dict[int, dict]:
        return {it["id"]: it for it in items}

    def check_category(self, cid: int, *, file: str | None = None, row: int | None = None) -> None:
        if cid not in self.category_ids:
            raise KitError(f"unknown category id {cid} (known: {min(self.category_ids)}–"
                           f"{max(self.category_ids)})", file=file, row=row, value=cid)

    def check_attributes(self, aids: tuple[int, ...], *, file: str | None = None,
                         row: int | None = None) -> None:
        for a in aids:
            if a not in self.attribute_ids:
                raise KitError(f"unknown attribute id {a} in the {self.source or 'label'} set",
                               file=file, row=row, value=a)

    def to_json(self) -> dict:
        out = {"categories": list(self.categories), "attributes": list(self.attributes)}
        if self.year is not None:
            out["info"] = {"year": self.year}
        return out


#: the largest category or attribute id a label file may give
MAX_ID = 1_000_000


def _check_items(items: object, key: str, path: str) -> tuple[dict, ...]:
    if not isinstance(items, list) or not items:
        raise KitError(f"'{key}' must be a non-empty list", file=path)
    seen: set[int] = set()
    out = []
    for i, it in enumerate(items):
        if (not isinstance(it, dict) or not fields.is_int(it.get("id"))
                or not 0 <= it["id"] <= MAX_ID or "name" not in it):
            raise KitError(f"{key}[{i}] needs an integer 'id' (0…{MAX_ID}) and a 'name'",
                           file=path, value=it)
        if it["id"] in seen:
            raise KitError(f"duplicate {key} id {it['id']}", file=path, value=it["id"])
        seen.add(it["id"])
        out.append({"id": it["id"], "name": str(it["name"]),
                    "supercategory": str(it.get("supercategory", "")),
                    "level": it.get("level", 0)})
    return tuple(sorted(out, key=lambda d: d["id"]))


def load_labels(path: str | Path | None = None, *, year: int = 2019) -> Labels:
    """Load a ``label_descriptions.json`` (2019 or 2020 layout); ``None``: the set shipped for
    ``year`` (2019 or 2020)."""
    if path is None:
        if year not in SHIPPED_LABELS:
            raise KitError(f"no label file is shipped for {year} (known: 2019, 2020)",
                           value=year)
        name = SHIPPED_LABELS[year]
        text = resources.files("imat_kit.data").joinpath(name).read_text("utf-8")
        where = f"<imat_kit>/{name}"
    else:
        where = str(path)
        try:
            text = fields.read_text(path, file=where)
        except OSError as e:
            raise KitError(f"cannot read label file: {e.strerror}", file=where) from None
    return labels_from_dict(fields.loads(text, what="label file", file=where), where)


def labels_from_dict(raw: object, where: str) -> Labels:
    """The label set of a parsed label file (or of a COCO-style file with ``categories`` and
    ``attributes``, such as Fashionpedia's or a prepared ``all.json``)."""
    if not isinstance(raw, dict):
        raise KitError("expected a JSON object with 'categories' and 'attributes'", file=where)
    cats = _check_items(raw.get("categories"), "categories", where)
    attrs = _check_items(raw.get("attributes"), "attributes", where)
    year = raw.get("info", {}).get("year") if isinstance(raw.get("info"), dict) else None
    if not isinstance(year, int):
        # The 2020 file has no info block; its attribute ids are not contiguous.
        year = 2020 if attrs[-1]["id"] + 1 != len(attrs) else 2019
    return Labels(cats, attrs, year=year, source=where)


def _parse_int(token: str, what: str, text: str, file: str | None, row: int | None) -> int:
    v = fields.int_or_none(token)  # refuses '', '-1', '1.5', '+3', 'x', '²', 20 digits
    if v is None:
        raise KitError(f"{what} {token.strip()[:30]!r} is not a non-negative integer (ASCII "
                       f"digits, at most {fields.MAX_DIGITS})", file=file, row=row, value=text)
    return v


def parse_class_id(text: str, labels: Labels | None = None, *, file: str | None = None,
                   row: int | None = None) -> tuple[int, tuple[int, ...]]:
    """``"6_28_77" -> (6, (28, 77))``; ``"6" -> (6, ())``.

    Attributes come back sorted and de-duplicated. With ``labels`` the ids are checked.
    """
    s = str(text).strip()
    parts = s.split("_")
    cat = _parse_int(parts[0], "category", s, file, row)
    attrs = tuple(sorted({_parse_int(p, "attribute", s, file, row) for p in parts[1:]}))
    if labels is not None:
        labels.check_category(cat, file=file, row=row)
        labels.check_attributes(attrs, file=file, row=row)
    return cat, attrs


def parse_attributes_ids(text: object, labels: Labels | None = None, *, file: str | None = None,
                         row: int | None = None) -> tuple[int, ...]:
    """The 2020 ``AttributesIds`` cell: ``"115,136,143"`` or empty/NaN → sorted tuple of ids."""
    if text is None or (isinstance(text, float) and text != text):
        return ()
    s = str(text).strip()
    if not s:
        return ()
    attrs = tuple(sorted({_parse_int(p, "attribute", s, file, row) for p in s.split(",")}))
    if labels is not None:
        labels.check_attributes(attrs, file=file, row=row)
    return attrs


def format_class_id(category: int, attributes: tuple[int, ...] | list[int] = ()) -> str:
    """``(6, (77, 28)) -> "6_28_77"``: the 2019 submission form (attributes sorted)."""
    return "_".join(str(x) for x in [int(category), *sorted(int(a) for a in attributes)])
