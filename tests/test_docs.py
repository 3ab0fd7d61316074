"""Every public function and class documents itself in numpydoc style (checked by numpydoc's own
validator), and the README's commands and API names still exist."""

import importlib
import inspect
import pydoc

import pytest

numpydoc_validate = pytest.importorskip("numpydoc.validate", reason="numpydoc is in the dev extra").validate

PUBLIC_MODULES = [
    "gradreg.estimator",
    "gradreg.io.formats",
    "gradreg.io.columns",
    "gradreg.io.sources",
    "gradreg.io.writers",
    "gradreg.io.partition",
    "gradreg.pipeline",
    "gradreg.fitted",
    "gradreg.plots",
    "gradreg.report",
    "gradreg.metrics",
    "gradreg.display",
    "gradreg.config",
    "gradreg.model",
    "gradreg.solvers.exact",
    "gradreg.solvers.gd",
    "gradreg.distributed",
    "gradreg.checkpoint",
]
# GL08 no docstring, SS01 no summary, PR01 a parameter undocumented, PR02 a documented parameter
# that does not exist, PR10 a malformed parameter line, RT01 no Returns section.
CHECKED = {"GL08", "SS01", "PR01", "PR02", "PR10", "RT01"}


def public_objects():
    for modname in PUBLIC_MODULES:
        mod = importlib.import_module(modname)
        assert mod.__all__, modname
        for name in mod.__all__:
            obj = getattr(mod, name)
            if not callable(obj):  # constants carry no docstring of their own
                continue
            yield f"{modname}.{name}"
            if inspect.isclass(obj) and not issubclass(obj, Warning):
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and (inspect.isfunction(member) or isinstance(member, classmethod)):
                        yield f"{modname}.{name}.{attr}"


def returns_nothing(qualname):
    obj = pydoc.locate(qualname)
    obj = getattr(obj, "__func__", obj)
    return inspect.isclass(obj) or inspect.signature(obj).return_annotation in (None, "None")


@pytest.mark.parametrize("qualname", sorted(set(public_objects())))
def test_numpydoc(qualname):
    result = numpydoc_validate(qualname)
    errors = [(code, msg) for code, msg in result["errors"] if code in CHECKED]
    if returns_nothing(qualname):
        errors = [(c, m) for c, m in errors if c != "RT01"]
    assert not errors, f"{qualname}: {errors}"
