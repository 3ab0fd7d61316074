"""The design: raw table columns made into the feature matrix, when they are more than numbers.

Categorical columns become one-hot dummies (the first level, or ``--reference``, dropped when
there is an intercept), and a Wilkinson formula (``y ~ x1 + np.log(x2) + C(region) + x1:x3``)
becomes its model matrix, through `formulaic <https://matthewwardrop.github.io/formulaic/>`_. A
:class:`Design` is learned once from the data (the levels of every categorical column, from all
chunks and ranks; the state of stateful transforms such as ``center()``) and is then applied,
unchanged, to every chunk of training data and to every table predicted later: it is stored in the
model file as plain JSON, and a formula read from a file is checked against a whitelist of
functions before anything of it is evaluated, so a model file can never run code.

``--categorical region`` is a formula too (``y ~ x1 + region``, the reference level first), so
both kinds name their terms as statsmodels does: ``region[T.north]``, ``C(region)[T.north]``,
``np.log(x2)``, ``x1:x3``.
"""

from __future__ import annotations

import ast
import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import MAX_LEVELS
from ..errors import ConfigError, DataError

__all__ = ["Design", "DesignRequest", "MAX_LEVELS", "merge_levels"]

FORMAT = 1  # version of the JSON a model file stores
LEARN_ROWS = 1024  # rows a formula without stateful transforms is checked and named on

# What a formula may call: formulaic's transforms and numpy's elementwise functions. Nothing else
# is evaluated, so a formula in a model file cannot run code.
TRANSFORMS = {
    "C", "I", "Q", "center", "scale", "standardize", "poly", "log", "log2", "log10", "exp", "exp2", "exp10", "sqrt", "abs",
    "Treatment", "Sum", "Helmert", "Diff", "Poly",  # patsy's contrast names, as in C(x, Treatment(reference="b"))
}  # fmt: skip
STATEFUL = {"center", "scale", "standardize", "poly"}  # learned from the data they first see
NUMPY_FUNCTIONS = {
    "log", "log1p", "log2", "log10", "exp", "expm1", "sqrt", "cbrt", "abs", "absolute", "square", "sign",
    "sin", "cos", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "floor", "ceil", "round",
    "clip", "power", "maximum", "minimum", "where", "isnan",
}  # fmt: skip
CONTRASTS = {"treatment", "sum", "helmert", "diff", "poly", "custom"}
_NODES = (
    ast.Expression, ast.Call, ast.Name, ast.Attribute, ast.Constant, ast.BinOp, ast.UnaryOp, ast.Compare,
    ast.BoolOp, ast.keyword, ast.List, ast.Tuple, ast.Load, ast.operator, ast.unaryop, ast.cmpop, ast.boolop,
)  # fmt: skip


def _quote(name: str) -> str:
    """A column name as a formula term: backticks keep spaces and symbols (``my col``) one name."""
    if "`" in name:
        raise ConfigError(f"column name {name!r} holds a backtick, which a formula cannot quote; rename the column")
    return f"`{name}`"


def _check_expression(expr: str, formula: str) -> tuple[list[str], list[str], bool]:
    """What a factor's Python expression reads: its column names in order, the columns inside
    ``C()``, and whether it calls a stateful transform; a ConfigError for anything that is not a
    whitelisted function of columns and constants."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise ConfigError(f"formula {formula!r}: cannot read the term {expr!r}") from None
    calls: set[int] = set()
    names: list[str] = []
    forced: list[str] = []
    stateful = False
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            raise ConfigError(f"formula {formula!r}: {type(node).__name__} is not allowed in the term {expr!r}")
        if isinstance(node, ast.Call):
            f = node.func
            ok = (isinstance(f, ast.Name) and f.id in TRANSFORMS) or (
                isinstance(f, ast.Attribute)
                and isinstance(f.value, ast.Name)
                and (
                    (f.value.id in ("np", "numpy") and f.attr in NUMPY_FUNCTIONS)
                    or (f.value.id == "contr" and f.attr in CONTRASTS)
                )
            )
            if not ok:
                shown = ast.unparse(f)
                raise ConfigError(
                    f"formula {formula!r}: {shown}() is not a function a formula may call; allowed are "
                    f"{', '.join(sorted(TRANSFORMS))} and numpy's elementwise functions (np.log, np.sqrt, ...)"
                )
            calls.add(id(f))
            if isinstance(f, ast.Attribute):
                calls.add(id(f.value))
                continue
            stateful |= f.id in STATEFUL
            if f.id == "C" and any(k.arg == "levels" for k in node.keywords):
                raise ConfigError(
                    f"formula {formula!r}: C(..., levels=...) is not taken: gradreg finds the levels in the data "
                    "(every chunk and rank); choose the reference with Treatment(reference=...) or --reference"
                )
            if f.id == "C":
                column = _column_arg(node.args[0]) if node.args else None
                if column is None:
                    shown = ast.unparse(node.args[0]) if node.args else ""
                    raise ConfigError(f"formula {formula!r}: C() takes a column name; got {shown!r}")
                forced.append(column)
            if f.id == "Q":
                column = _column_arg(node)
                if column is None:
                    raise ConfigError(f"formula {formula!r}: Q() takes a column name in quotes, as Q('price [usd]')")
                names.append(column)
        elif isinstance(node, ast.Attribute) and id(node) not in calls:
            raise ConfigError(f"formula {formula!r}: {ast.unparse(node)} is not allowed in the term {expr!r}")
        elif isinstance(node, ast.Name) and id(node) not in calls:
            if node.id.startswith("__"):
                raise ConfigError(f"formula {formula!r}: the name {node.id!r} is not allowed")
            names.append(node.id)
    return list(dict.fromkeys(names)), forced, stateful


def _column_arg(node: ast.AST) -> str | None:
    """The column a C() argument names: a plain name, or Q('a name')."""
    if isinstance(node, ast.Name):
        return node.id
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "Q"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return node.args[0].value
    return None


@dataclass
class _Parsed:
    rhs: Any  # formulaic's parsed right-hand side
    lhs: Any | None
    inputs: list[str]  # columns the right-hand side reads, in formula order
    target_inputs: list[str]
    forced: list[str]  # columns inside C(...): categorical whatever their type
    stateful: bool


@functools.lru_cache(maxsize=32)
def _parse(formula: str) -> _Parsed:
    """A formula read by formulaic, its Python checked, and what it reads (cached: every select
    of a formula, a chunk's and each prediction's, asks again)."""
    from formulaic import Formula
    from formulaic.errors import FormulaicError

    try:
        parsed = Formula(formula)
    except (FormulaicError, ValueError, SyntaxError) as e:
        raise ConfigError(f"formula {formula!r}: {str(e).splitlines()[0]}") from None
    rhs = getattr(parsed, "rhs", parsed)
    lhs = getattr(parsed, "lhs", None)

    def columns(side) -> tuple[list[str], list[str], bool]:
        out: list[str] = []
        forced: list[str] = []
        stateful = False
        for term in side:
            for factor in term.factors:
                expr = str(factor.expr)
                if factor.eval_method.value == "lookup":
                    used = [expr]
                elif factor.eval_method.value == "literal":
                    used = []
                else:
                    used, in_c, calls_stateful = _check_expression(expr, formula)
                    forced.extend(in_c)
                    stateful |= calls_stateful
                for n in used:
                    if n not in out:
                        out.append(n)
        return out, forced, stateful

    inputs, forced, stateful = columns(rhs)
    target_inputs = columns(lhs)[0] if lhs is not None else []
    if lhs is not None and not len(lhs):
        lhs = None
    return _Parsed(rhs, lhs, inputs, target_inputs, list(dict.fromkeys(forced)), stateful)


def has_targets(formula: str) -> bool:
    """Whether a formula names its targets left of ``~`` (``~ x1`` and ``x1`` do not).

    Parameters
    ----------
    formula : str

    Returns
    -------
    bool
    """
    return _parse(formula).lhs is not None


def stateful_error(formula: str) -> ConfigError:
    """The refusal of a stateful transform where the table is not in one process's memory.

    Parameters
    ----------
    formula : str

    Returns
    -------
    ConfigError
    """
    return ConfigError(
        f"formula {formula!r}: center(), scale(), standardize() and poly() learn from the whole table, "
        "which is not in memory here (streamed, several files, or spread over ranks); transform the column "
        "beforehand, or fit one file in one process without --stream"
    )


@dataclass
class DesignRequest:
    """What the user asked for, before the data are seen: a formula and/or categorical columns.

    Parameters
    ----------
    formula : str, optional
        ``"y ~ x1 + C(region)"``; several targets as ``"y1 + y2 ~ ..."``.
    categorical : sequence of str
        Columns to one-hot encode (besides those whose type is categorical already: pandas
        ``category`` and string columns of a DataFrame, Arrow dictionary columns).
    reference : dict of str to str
        Column → the level dropped as the reference (default: the first level, sorted).
    max_levels : int
        More levels than this in a categorical column is an error.
    unknown : {"error", "ignore"}
        At prediction: a level not seen in training is an error, or gets all-zero dummies.
    """

    formula: str | None = None
    categorical: list[str] = field(default_factory=list)
    reference: dict[str, str] = field(default_factory=dict)
    max_levels: int = MAX_LEVELS
    unknown: str = "error"

    def __post_init__(self) -> None:
        if self.unknown not in ("error", "ignore"):
            raise ConfigError("{unknown} must be 'error' or 'ignore'; got {unknown=}", unknown=self.unknown)
        if not (isinstance(self.max_levels, int) and self.max_levels >= 2):
            raise ConfigError("{max_levels} must be an integer >= 2; got {max_levels=}", max_levels=self.max_levels)
        if self.formula is not None and not str(self.formula).strip():
            raise ConfigError("{formula} is empty; write it as 'y ~ x1 + x2'", formula=self.formula)

    @property
    def wanted(self) -> bool:
        """Whether anything beyond numeric columns was asked for.

        Returns
        -------
        bool
        """
        return self.formula is not None or bool(self.categorical)


def parse_reference(values: Sequence[str] | str | None, categorical: Sequence[str]) -> dict[str, str]:
    """``--reference`` values (``region=south``, or ``south`` with one categorical column) as a dict.

    Parameters
    ----------
    values : str or sequence of str, optional
    categorical : sequence of str
        The columns given with ``--categorical``.

    Returns
    -------
    dict of str to str
    """
    if not values:
        return {}
    if isinstance(values, dict):
        return {str(k): v for k, v in values.items()}
    if isinstance(values, str):
        values = [values]
    out: dict[str, str] = {}
    for v in values:
        for item in str(v).split(","):
            item = item.strip()
            if not item:
                continue
            if "=" in item:
                col, level = (t.strip() for t in item.split("=", 1))
            elif len(categorical) == 1:
                col, level = categorical[0], item
            else:
                raise ConfigError(
                    f"{{reference}} {item!r}: name the column as COLUMN=LEVEL (there are {len(categorical)} categorical columns)",
                    reference=values,
                )
            if col in out and out[col] != level:
                raise ConfigError(
                    f"{{reference}}: column {col!r} is given two reference levels, {out[col]!r} and {level!r}", reference=values
                )
            out[col] = level
    return out


def _level_key(v: Any) -> tuple:
    return (isinstance(v, str), v)


def _normalize(v: Any) -> Any:
    """A level as JSON keeps it: Python scalars; 3.0 read as a float is the level 3 of an int column."""
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _as_numbers(levels: list[Any]) -> list[Any]:
    """Levels read as text that are all numbers written plainly (``1935``, ``2.5``, not ``007``)
    as numbers, sorted as numbers: the levels of a number column however it was read."""
    if not levels or not all(isinstance(v, str) for v in levels):
        return levels
    out = []
    for v in levels:
        try:
            f = float(v)
        except ValueError:
            return levels
        x = _normalize(f)
        if v.strip() not in (str(x), repr(f)):  # 007, 1e3, 1.50: not written as the number reads back
            return levels
        out.append(x)
    return sorted(out)


def merge_levels(a: Sequence[Any], b: Sequence[Any]) -> list[Any]:
    """The sorted union of two lists of levels (numbers before text).

    Parameters
    ----------
    a, b : sequence

    Returns
    -------
    list
    """
    return sorted(set(a) | set(b), key=_level_key)


def column_levels(col: Any) -> list[Any]:
    """The distinct non-missing values of an Arrow column, sorted.

    Parameters
    ----------
    col : pyarrow.ChunkedArray or Array

    Returns
    -------
    list
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    values = pc.unique(pc.drop_null(col)).to_pylist()
    out = {_normalize(v) for v in values if not (isinstance(v, float) and math.isnan(v))}  # NaN: missing
    return sorted(out, key=_level_key)


def is_categorical_type(typ: Any, text: bool = False) -> bool:
    """Whether an Arrow type is categorical by nature: dictionary, boolean, and text when ``text``
    (a DataFrame's string column).

    Parameters
    ----------
    typ : pyarrow.DataType
    text : bool

    Returns
    -------
    bool
    """
    import pyarrow as pa

    if pa.types.is_dictionary(typ) or pa.types.is_boolean(typ):
        return True
    return text and (pa.types.is_string(typ) or pa.types.is_large_string(typ))


class Design:
    """A formula fixed to the data: which columns it reads, the levels of each categorical column,
    the state of its stateful transforms, and the names of the columns it makes.

    Build one with :meth:`learn`; apply it with :meth:`features`/:meth:`targets`; store it with
    :meth:`to_json` and read it back with :meth:`from_json` (checked: it never runs code).

    Parameters
    ----------
    formula : str
    levels : dict of str to list
        Each categorical input column's levels, the reference first.
    transform_state : dict
        formulaic's state of the stateful transforms (``center(x)``'s mean...), as JSON.
    feature_names, target_names : list of str
    fit_intercept : bool
        Whether the formula has an intercept (formulaic's ``Intercept`` column is not a feature:
        the solvers fit the intercept themselves).
    sugar : bool
        True when built from ``--categorical``: the targets are plain columns read as such.
    unknown : {"error", "ignore"}
    """

    def __init__(
        self,
        formula: str,
        levels: dict[str, list[Any]],
        transform_state: dict[str, Any],
        feature_names: list[str],
        target_names: list[str],
        fit_intercept: bool,
        *,
        sugar: bool = False,
        unknown: str = "error",
    ) -> None:
        self.formula = formula
        self.parsed = _parse(formula)
        self.levels = levels
        self.transform_state = transform_state
        self.feature_names = feature_names
        self.target_names = target_names
        self.fit_intercept = fit_intercept
        self.sugar = sugar
        self.unknown = unknown
        self._spec = None
        self._lhs_spec = None
        self.ignored: dict[str, int] = {}  # unseen levels met with unknown="ignore", per column
        self.implicit_constant = False  # '- 1' with every level of a categorical: a constant all the same

    # -- what it reads --------------------------------------------------------------------------

    @property
    def inputs(self) -> list[str]:
        """The columns the features are made from.

        Returns
        -------
        list of str
        """
        return list(self.parsed.inputs)

    @property
    def target_inputs(self) -> list[str]:
        """The columns the targets are made from (the left-hand side's).

        Returns
        -------
        list of str
        """
        return list(self.parsed.target_inputs)

    def text_columns(self) -> list[str]:
        """The categorical columns, which a CSV reader reads as text (a level may look like a
        number for many rows, then not).

        Returns
        -------
        list of str
        """
        return list(self.levels)  # numbers too: a new file's level may be text

    # -- learning -------------------------------------------------------------------------------

    @staticmethod
    def formula_of(targets: Sequence[str], features: Sequence[str], fit_intercept: bool) -> str:
        """The formula ``--categorical`` stands for: ``t ~ f1 + f2 + ...`` (``- 1`` without an intercept).

        Parameters
        ----------
        targets, features : sequence of str
        fit_intercept : bool

        Returns
        -------
        str
        """
        rhs = " + ".join(_quote(f) for f in features)
        return f"{' + '.join(_quote(t) for t in targets)} ~ {rhs}" + ("" if fit_intercept else " - 1")

    @staticmethod
    def categorical_inputs(request: DesignRequest, formula: str, schema: Any) -> list[str]:
        """Which columns a formula reads as categorical: named with ``categorical`` or inside
        ``C()``, or categorical by type: dictionary, boolean and text columns (as formulaic and
        statsmodels treat text; see :func:`is_categorical_type`).

        Parameters
        ----------
        request : DesignRequest
        formula : str
        schema : pyarrow.Schema
            The table's.

        Returns
        -------
        list of str
        """
        parsed = _parse(formula)
        names = set(schema.names)
        out = []
        for n in parsed.inputs:
            if n not in names:
                continue
            if n in request.categorical or n in parsed.forced or is_categorical_type(schema.field(n).type, text=True):
                out.append(n)
        return out

    @classmethod
    def learn(
        cls,
        request: DesignRequest,
        formula: str,
        table: Any,
        levels: dict[str, list[Any]],
        *,
        where: Callable[[int, str], str],
        source: str,
        sugar: bool = False,
    ) -> Design:
        """Fix a formula to the data: the levels given (from every chunk and rank), the state of
        its stateful transforms from ``table``, and the names of the columns it makes.

        Parameters
        ----------
        request : DesignRequest
        formula : str
        table : pyarrow.Table
            Rows to learn the transforms' state from and to check the formula on (the whole table
            in memory; the first chunk when streamed, where :func:`~gradreg.io.open_source`
            refuses stateful transforms). It has every column the formula reads (see
            :func:`~gradreg.io.select`).
        levels : dict of str to list
            Each categorical input's levels, sorted; the reference is moved first here.
        where : callable
            ``where(row, column)`` for messages.
        source : str
        sugar : bool

        Returns
        -------
        Design
        """
        from formulaic import model_matrix
        from formulaic.errors import FormulaicError

        parsed = _parse(formula)
        levels = {k: _as_numbers(list(v)) for k, v in levels.items()}
        for col, level in request.reference.items():
            if col not in levels:
                raise ConfigError(
                    f"{{reference}} {col}={level}: {col!r} is not a categorical column of the model", reference=request.reference
                )
            known = {str(x): x for x in levels[col]}
            if str(level) not in known:
                raise ConfigError(
                    f"{{reference}} {col}={level}: {level!r} is not a level of {col!r}; its levels are "
                    + ", ".join(map(repr, levels[col][:20]))
                    + (", …" if len(levels[col]) > 20 else ""),
                    reference=request.reference,
                )
            ref = known[str(level)]
            levels[col] = [ref] + [x for x in levels[col] if x != ref]
        for col, lv in levels.items():
            if len(lv) > request.max_levels:
                raise DataError(
                    f"{source}, column {col!r}: {len(lv):,} levels, more than {request.max_levels:,} "
                    "(--max-levels); a column with that many values identifies rows rather than grouping them: "
                    "leave it out, or raise --max-levels"
                )
        draft = cls(formula, levels, {}, [], [], True, sugar=sugar, unknown=request.unknown)
        if not parsed.stateful:  # the names need the levels, not the rows: a few rows will do
            table = table.slice(0, LEARN_ROWS)
        frame = draft._frame(table, parsed.inputs, where)
        try:
            mm = model_matrix(parsed.rhs, frame, na_action="ignore", context=_CONTEXT)
        except (FormulaicError, KeyError, NameError, TypeError, ValueError) as e:
            raise ConfigError(f"formula {formula!r}: {_first_line(e)}") from None
        names = [str(c) for c in mm.columns]
        fit_intercept = "Intercept" in names
        draft.fit_intercept = fit_intercept
        draft.implicit_constant = not fit_intercept and _full_dummies(mm.model_spec)
        draft.feature_names = [n for n in names if n != "Intercept"]
        draft.transform_state = _jsonable(dict(mm.model_spec.transform_state))
        if not draft.feature_names:
            raise ConfigError(f"formula {formula!r} makes no feature columns besides the intercept")
        if sugar or parsed.lhs is None:
            draft.target_names = []
        else:
            tframe = draft._frame(table, parsed.target_inputs, where)
            try:
                lm = model_matrix(parsed.lhs, tframe, na_action="ignore", context=_CONTEXT, ensure_full_rank=False)
            except (FormulaicError, KeyError, NameError, TypeError, ValueError) as e:
                raise ConfigError(f"formula {formula!r}: {_first_line(e)}") from None
            draft.target_names = [str(c) for c in lm.columns if str(c) != "Intercept"]
        return draft

    # -- applying -------------------------------------------------------------------------------

    def _frame(self, table: Any, columns: Sequence[str], where: Callable[[int, str], str]) -> Any:
        """The columns a side of the formula reads, as a DataFrame: numbers as float64 (text that
        is not a number is an error naming its cell), categorical columns with the model's levels."""
        import pandas as pd

        from .columns import _required_column

        data: dict[str, Any] = {}
        names = list(table.column_names)
        shim = _WhereTable(table, where)
        for n in columns:
            col = table.column(n)
            if n in self.levels:
                data[n] = self._categories(col, n, where)
            else:
                data[n] = _required_column(shim, n, names.index(n), features=True)
        return pd.DataFrame(data, index=pd.RangeIndex(table.num_rows))

    def _categories(self, col: Any, name: str, where: Callable[[int, str], str]) -> Any:
        """A column as a pandas Categorical of the model's levels (codes found by Arrow, in bulk);
        a level the model lacks is an error naming its cell, or missing (all dummies 0) when
        ``unknown`` is "ignore"."""
        import pandas as pd
        import pyarrow as pa
        import pyarrow.compute as pc

        known = self.levels[name]
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        text = any(isinstance(v, str) for v in known)  # text levels: the new column read as text too
        if text:
            values = pa.array([str(v) for v in known], type=pa.string())
            col = col.cast(pa.string())
        else:  # numbers: 3 and 3.0 are one level, as _normalize makes them
            values = pa.array([float(v) for v in known], type=pa.float64())
            try:
                col = pc.cast(col, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # text that is not all numbers: by text
                values = pa.array([str(v) for v in known], type=pa.string())
                col = pc.utf8_trim_whitespace(col.cast(pa.string()))
        codes = pc.index_in(col, value_set=values)
        unseen = pc.and_(pc.is_null(codes), pc.is_valid(col))
        if pc.any(unseen).as_py():
            flags = unseen.to_numpy(zero_copy_only=False)
            i = int(np.flatnonzero(flags)[0])
            v = _normalize(col[i].as_py())
            self.ignored[name] = self.ignored.get(name, 0) + int(flags.sum())
            if self.unknown != "ignore":
                shown = ", ".join(map(repr, known[:20])) + (", …" if len(known) > 20 else "")
                raise DataError(
                    f"{where(i, name)}: level {v!r} of categorical column {name!r} was not seen in training; "
                    f"the model knows {shown} (predict it with all its dummies 0: --unknown ignore, "
                    "or unknown='ignore' in Python)"
                )
        codes = pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64)  # -1: all its dummies 0
        return pd.Categorical.from_codes(codes, categories=known)

    def _specs(self):
        from formulaic import ModelSpec

        if self._spec is None:
            state = _from_json_state(self.transform_state)
            self._spec = ModelSpec(
                formula=self.parsed.rhs, materializer="pandas", ensure_full_rank=True, na_action="ignore", transform_state=state
            )
            if self.parsed.lhs is not None and not self.sugar:
                self._lhs_spec = ModelSpec(
                    formula=self.parsed.lhs, materializer="pandas", ensure_full_rank=False, na_action="ignore"
                )
        return self._spec, self._lhs_spec

    def features(self, table: Any, where: Callable[[int, str], str]) -> np.ndarray:
        """The feature matrix of a table's rows.

        Parameters
        ----------
        table : pyarrow.Table
            With at least the :attr:`inputs` columns, no missing values in them.
        where : callable
            ``where(row, column)`` for messages.

        Returns
        -------
        ndarray of shape (n_rows, n_features)
            float64.
        """
        spec, _ = self._specs()
        frame = self._frame(table, self.parsed.inputs, where)
        return self._matrix(spec, frame, self.feature_names, where, "feature")

    def targets(self, table: Any, where: Callable[[int, str], str]) -> np.ndarray:
        """The target matrix of a table's rows: the formula's left-hand side.

        Parameters
        ----------
        table : pyarrow.Table
        where : callable

        Returns
        -------
        ndarray of shape (n_rows, n_targets)
        """
        _, spec = self._specs()
        frame = self._frame(table, self.parsed.target_inputs, where)
        return self._matrix(spec, frame, self.target_names, where, "target")

    def _matrix(self, spec, frame, names: list[str], where, what: str) -> np.ndarray:
        from formulaic.errors import FormulaicError

        try:
            with warnings.catch_warnings():  # unseen levels were counted (unknown="ignore") or refused before
                warnings.filterwarnings("ignore", message="Data has categories outside of the nominated levels")
                mm = spec.get_model_matrix(frame, context=_CONTEXT)
        except (FormulaicError, KeyError, NameError, TypeError, ValueError) as e:
            raise DataError(f"formula {self.formula!r}: {_first_line(e)}") from None
        got = [str(c) for c in mm.columns]
        cols = [got.index(n) for n in names if n in got]
        if len(cols) != len(names):
            raise DataError(f"formula {self.formula!r}: the data make columns {got}, not the model's {names}")
        X = mm.to_numpy(dtype=np.float64) if hasattr(mm, "to_numpy") else np.asarray(mm, dtype=np.float64)
        if cols and cols == list(range(cols[0], cols[0] + len(cols))):
            X = X[:, cols[0] : cols[0] + len(cols)]  # a view: all but the intercept, in order
        else:
            X = X[:, cols]
        if not np.isfinite(X).all():
            bad = ~np.isfinite(X)
            row = int(np.argmax(bad.any(axis=1)))
            j = int(np.argmax(bad[row]))
            term = names[j]
            inputs = [n for n in self.parsed.inputs + self.parsed.target_inputs if n in term] or [None]
            raise DataError(
                f"{where(row, inputs[0]) if inputs[0] else 'row ' + str(row + 1)}: the {what} term {term!r} of the "
                f"formula is {X[row, j]} here; values must be finite (np.log of 0 or a negative number?)"
            )
        return np.ascontiguousarray(X)

    # -- storing --------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The design as plain JSON for the model file.

        Returns
        -------
        dict
        """
        return {
            "format": FORMAT,
            "formula": self.formula,
            "levels": {k: list(v) for k, v in self.levels.items()},
            "transform_state": self.transform_state,
            "feature_names": list(self.feature_names),
            "target_names": list(self.target_names),
            "fit_intercept": bool(self.fit_intercept),
            "sugar": bool(self.sugar),
            "unknown": self.unknown,
            "implicit_constant": bool(self.implicit_constant),
        }

    @classmethod
    def from_json(cls, d: Any, source: str = "model file") -> Design:
        """A design stored by :meth:`to_json`; its formula is checked before anything is evaluated.

        Parameters
        ----------
        d : dict
        source : str
            Named in errors.

        Returns
        -------
        Design

        Raises
        ------
        gradreg.errors.ModelFileError
            For anything malformed or not allowed.
        """
        from ..errors import ModelFileError

        try:
            if d.get("format") != FORMAT:
                raise ModelFileError(f"{source}: design format {d.get('format')!r} is not one this gradreg reads ({FORMAT})")
            levels = d["levels"]
            ok = isinstance(levels, dict) and all(
                isinstance(v, list) and all(isinstance(x, (str, int, float, bool)) for x in v) for v in levels.values()
            )
            names_ok = all(isinstance(x, str) for x in list(d["feature_names"]) + list(d["target_names"]))
            if not (ok and names_ok and isinstance(d["formula"], str) and isinstance(d["transform_state"], dict)):
                raise ModelFileError(f"{source}: the model's design is malformed")
            design = cls(
                d["formula"],
                {str(k): list(v) for k, v in levels.items()},
                d["transform_state"],
                list(d["feature_names"]),
                list(d["target_names"]),
                bool(d["fit_intercept"]),
                sugar=bool(d.get("sugar", False)),
                unknown="ignore" if d.get("unknown") == "ignore" else "error",
            )
            design.implicit_constant = bool(d.get("implicit_constant", False))
        except ConfigError as e:
            raise ModelFileError(f"{source}: the model's formula is not allowed: {e}") from None
        except (KeyError, TypeError, AttributeError):
            raise ModelFileError(f"{source}: the model's design is malformed") from None
        return design

    def with_unknown(self, unknown: str) -> Design:
        """A copy that treats unseen levels as ``unknown`` says (``"error"`` or ``"ignore"``).

        Parameters
        ----------
        unknown : {"error", "ignore"}

        Returns
        -------
        Design
        """
        DesignRequest(unknown=unknown)  # validates
        return Design.from_json({**self.to_json(), "unknown": unknown})

    def describe(self) -> str:
        """One line for a summary: the formula and the categorical columns with their level counts.

        Returns
        -------
        str
        """
        cats = ", ".join(f"{k} ({len(v)} levels, reference {v[0]!r})" for k, v in self.levels.items())
        head = "categorical: " + cats if self.sugar else f"formula: {self.formula}" + (f"; categorical: {cats}" if cats else "")
        return head


_CONTEXT = {"np": np, "numpy": np}


def _full_dummies(spec: Any) -> bool:
    """Whether a model spec has a categorical term with a column for every level: its columns sum
    to 1, a constant in the features' span (statsmodels' implicit constant)."""
    for st in getattr(spec, "structure", None) or []:
        factors = list(st.term.factors)
        if len(factors) != 1:
            continue
        state = spec.encoder_state.get(str(factors[0].expr))
        if state and getattr(state[0], "value", None) == "categorical":
            if len(st.columns) == len(state[1].get("categories", ())) > 1:
                return True
    return False


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise ConfigError(f"a formula transform keeps a state gradreg cannot store ({type(obj).__name__})")


def _from_json_state(obj: Any) -> Any:
    # JSON made poly()'s integer keys text; formulaic looks them up as ints
    if isinstance(obj, dict):
        return {(int(k) if isinstance(k, str) and k.isdigit() else k): _from_json_state(v) for k, v in obj.items()}
    return obj


class _WhereTable:
    """What io.columns' checks need of a Table (its data and where a cell is), for a pyarrow table
    whose rows are some rows of another."""

    def __init__(self, data: Any, where: Callable[[int, str], str]) -> None:
        self.data = data
        self._where = where
        self.path = None
        self.byte_start = None

    def where(self, row: int | None = None, column: str | None = None) -> str:
        return self._where(0 if row is None else row, column)
