"""The Bitable's views, as the view APIs define them: the model and its checks.

Sources: lark-oapi 1.7.5 ``api/bitable/v1/model`` (``AppTableView``: view_id, view_name,
view_type, property; ``AppTableViewProperty``: filter_info, hidden_fields, hierarchy_config —
no sort; ``ReqView``: view_name, view_type; ``PatchAppTableViewRequestBody``: view_name,
property; a condition's ``value`` is a string) and the pages of app-table-view create / patch /
list / get / delete (open.feishu.cn/document/server-docs/docs/bitable-v1/app-table-view/…):

* at most 200 views a table, public, locked and personal ones together (1254101
  ViewExceedLimit, "视图数量超限, 限制200个");
* a name is 1-100 characters without ``[`` or ``]`` (1254021 EmptyViewName, 1254022
  InvalidViewName), unique in its table (1254020 ViewNameDuplicated);
* ``view_type`` grid (the default), kanban, gallery, gantt or form (1254019 InvalidViewType);
* ``filter_info``: ``conjunction`` and|or and ``conditions`` (at most 50), each a ``field_id`` of
  the table (1254044 FieldIdNotFound), an ``operator`` of the ten listed (isNot, contains,
  doesNotContain, isGreaterEqual and isLessEqual not on date fields) and a ``value``, a JSON
  array in a string (``"[\\"text content\\"]"``); malformed filters 1254018 InvalidFilter.
  The platform answers a filter with a ``condition_id`` and the ``field_type`` of each condition;
* ``hidden_fields``: at most 300 field ids of the table;
* list pages hold at most 100 views and name, type and public level only (``property`` is
  what ``get`` adds).

Approximations (not pinned down by the pages): deleting a table's last view is refused with
1254008 EmptyView; ``hidden_fields`` naming an unknown field 1254044.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

MAX_VIEWS = 200
MAX_VIEW_NAME = 100
MAX_VIEW_PAGE = 100
MAX_VIEW_CONDITIONS = 50
MAX_HIDDEN_FIELDS = 300
VIEW_TYPES = frozenset({"grid", "kanban", "gallery", "gantt", "form"})
VIEW_NAME_FORBIDDEN = re.compile(r"[\[\]]")
DEFAULT_VIEW_NAME = "表格"  # the grid view every new table opens with


class ViewProblem(Exception):
    """A request the platform refuses: ``code`` and ``msg`` as it answers them."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


@dataclass
class View:
    view_id: str
    view_name: str
    view_type: str = "grid"
    filter_info: dict[str, Any] | None = None
    hidden_fields: list[str] = field(default_factory=list)
    public_level: str = "Public"

    def listed(self) -> dict[str, Any]:
        """As the list API answers it (no property)."""
        return {
            "view_id": self.view_id,
            "view_name": self.view_name,
            "view_type": self.view_type,
            "view_public_level": self.public_level,
        }

    def full(self) -> dict[str, Any]:
        """As get, create and patch answer it."""
        return {
            **self.listed(),
            "property": {
                "filter_info": copy.deepcopy(self.filter_info),
                "hidden_fields": list(self.hidden_fields) or None,
            },
        }


def check_view_name(raw: Any, taken: set[str]) -> str:
    """A new name for a view of a table whose other views are named ``taken``."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise ViewProblem(1254021, "EmptyViewName")
    if not isinstance(raw, str):
        raise ViewProblem(1254001, "WrongRequestBody: view_name must be a string")
    if len(raw) > MAX_VIEW_NAME or VIEW_NAME_FORBIDDEN.search(raw):
        raise ViewProblem(
            1254022, f"InvalidViewName: at most {MAX_VIEW_NAME} characters, without [ ]"
        )
    if raw in taken:
        raise ViewProblem(1254020, "ViewNameDuplicated")
    return raw


def check_view_type(raw: Any) -> str:
    if raw is None:
        return "grid"
    if raw not in VIEW_TYPES:
        raise ViewProblem(1254019, f"InvalidViewType: one of {sorted(VIEW_TYPES)}")
    return str(raw)


def check_filter_info(
    raw: Any,
    field_types: dict[str, int],
    date_types: frozenset[int],
    operators: frozenset[str],
    date_operators: frozenset[str],
    new_id: Any,
) -> dict[str, Any] | None:
    """``filter_info`` as stored (and answered): each condition with its id and field type.
    ``field_types``: field_id -> type of the table's fields. None clears the filter."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ViewProblem(1254018, "InvalidFilter: filter_info must be an object")
    conjunction = raw.get("conjunction", "and")
    if conjunction not in ("and", "or"):
        raise ViewProblem(1254018, "InvalidFilter: conjunction must be and or or")
    conditions = raw.get("conditions")
    if not isinstance(conditions, list):
        raise ViewProblem(1254018, "InvalidFilter: conditions must be a list")
    if len(conditions) > MAX_VIEW_CONDITIONS:
        raise ViewProblem(1254018, f"InvalidFilter: at most {MAX_VIEW_CONDITIONS} conditions")
    stored: list[dict[str, Any]] = []
    for cond in conditions:
        if not isinstance(cond, dict):
            raise ViewProblem(1254018, "InvalidFilter: a condition must be an object")
        field_id, operator = cond.get("field_id"), cond.get("operator", "is")
        if not isinstance(field_id, str) or field_id not in field_types:
            raise ViewProblem(1254044, f"FieldIdNotFound: {field_id!r}")
        ftype = field_types[field_id]
        if operator not in operators:
            raise ViewProblem(1254018, f"InvalidFilter: unknown operator {operator!r}")
        if ftype in date_types and operator not in date_operators:
            raise ViewProblem(1254018, f"InvalidFilter: {operator} is not allowed on a date field")
        value = cond.get("value")
        if operator in ("isEmpty", "isNotEmpty"):
            value = None
        elif not isinstance(value, str):
            raise ViewProblem(1254018, "InvalidFilter: value must be a string (a JSON array)")
        else:
            try:
                parsed = json.loads(value)
            except ValueError:
                raise ViewProblem(1254018, "InvalidFilter: value is not a JSON array") from None
            if not isinstance(parsed, list) or not parsed:
                raise ViewProblem(1254018, "InvalidFilter: value must be a non-empty JSON array")
        stored.append(
            {
                "condition_id": cond.get("condition_id") or new_id("con"),
                "field_id": field_id,
                "field_type": ftype,
                "operator": operator,
                "value": value,
            }
        )
    return {"conjunction": conjunction, "conditions": stored, "condition_omitted": False}


def check_hidden_fields(raw: Any, field_ids: set[str]) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(f, str) for f in raw):
        raise ViewProblem(1254001, "WrongRequestBody: hidden_fields must be a list of field ids")
    if len(raw) > MAX_HIDDEN_FIELDS:
        raise ViewProblem(1254001, f"WrongRequestBody: at most {MAX_HIDDEN_FIELDS} hidden_fields")
    unknown = [f for f in raw if f not in field_ids]
    if unknown:
        raise ViewProblem(1254044, f"FieldIdNotFound: {unknown[0]!r}")
    return list(dict.fromkeys(raw))
