"""The Python-level sandbox policy: what LLM-written math code may do, enforced by
RestrictedPython compilation plus run-time guards.

Why these layers. RestrictedPython rewrites attribute access, subscripts, star-calls, ``print``
and imports into calls of guard functions that *we* supply, and refuses names and attributes that
start with ``_`` at compile time. On their own its defaults both refuse ordinary math code
(``dp[i] += 1``, ``nonlocal``, ``super().__init__()``, ``from sympy import *``, ``__repr__`` in a
class, ``str.format``) and leave holes that real libraries open (``sympy.sympify`` evaluates
strings with Python's ``eval``; ``sympy.lambdify`` and ``mpmath.identify`` ``exec`` generated
source; ``numpy.load`` unpickles; ``operator.attrgetter`` and ``str.format`` read arbitrary
attributes; any metaclass builds classes with arbitrary dunder attributes, such as an
``__array_interface__`` that hands numpy a raw pointer). So the policy here is:

* **Compile time** (:class:`SandboxTransformer`): underscore names and attributes are refused
  except a short list of harmless dunders (``__name__``, ``__init__``, arithmetic and container
  methods); frame/generator/traceback internals are refused; keyword arguments may not start
  with ``_``; string annotations are refused (``typing.get_type_hints`` would ``eval`` them);
  ``match``, ``async``, ``except*`` stay refused. Augmented assignment of items/attributes,
  ``nonlocal``, annotated assignment and ``from module import *`` are allowed.
* **Imports** (:func:`guarded_import`): an allowlist of top-level modules, minus deny-listed
  subtrees (file I/O, code generation, test runners, ctypes, raw BLAS). ``from m import x`` checks
  every imported value like an attribute read.
* **Attribute reads** (:func:`guarded_getattr`): besides the name rules, every *value* read is
  checked: modules must be allowed, frames/code/tracebacks and metaclasses are refused, the
  dangerous builtins (``eval``, ``open`` ...) are refused wherever they are found, and callables
  must come from allowed modules. A few library callables are substituted by safe versions
  (``lambdify``, ``functools.wraps``, ``getattr`` ...).
* **Library patches** (:func:`install_library_patches`, applied once per worker): sympy's string
  parser evaluates through this same policy; ``lambdify`` renames every symbol to a fresh
  ``Dummy`` before generating code, so no user text reaches the generated source; scipy's
  result objects (dicts whose keys read as attributes) stop resolving dunder names, so a key
  cannot pose as a numpy protocol such as ``__array_interface__`` (patched when scipy is first
  imported, through a post-import hook).

This layer is the first line only. The worker processes add the second (unprivileged user,
rlimits, no child processes, private directory, no network); see ``worker.py``.

This module is loaded inside the workers outside the ``rstar_math`` package, so it imports only
the standard library and RestrictedPython (and sympy lazily, when patching it).
"""

from __future__ import annotations

import ast
import builtins
import functools
import keyword
import operator
import string
import sys
import types
from collections.abc import Callable, Iterable
from typing import Any

from RestrictedPython.transformer import RestrictingNodeTransformer, copy_locations

try:
    from RestrictedPython.transformer import INSPECT_ATTRIBUTES
except ImportError:  # RestrictedPython < 7.1; the names are listed below anyway
    INSPECT_ATTRIBUTES = frozenset()

__all__ = [
    "ALLOWED_MODULE_ROOTS",
    "PolicyError",
    "SandboxTransformer",
    "compile_restricted_module",
    "guarded_getattr",
    "guarded_import",
    "install_library_patches",
    "module_allowed",
    "new_namespace",
    "parse_block",
]


class PolicyError(Exception):
    """Raised when sandboxed code tries something the policy refuses."""


# --------------------------------------------------------------------------- module policy

#: Top-level modules sandboxed code may import.
ALLOWED_MODULE_ROOTS: frozenset[str] = frozenset(
    {
        "math",
        "cmath",
        "fractions",
        "decimal",
        "itertools",
        "functools",
        "collections",
        "statistics",
        "random",
        "re",
        "operator",
        "heapq",
        "bisect",
        "numbers",
        "copy",
        "datetime",
        "sympy",
        "numpy",
        "scipy",
        "mpmath",
    }
)

#: Subtrees of allowed packages that stay refused: file I/O, code generation and compilation,
#: test runners, plotting/preview (subprocesses), ctypes, raw BLAS/LAPACK entry points.
DENIED_MODULE_PREFIXES: tuple[str, ...] = (
    "numpy.ctypeslib",
    "numpy.f2py",
    "numpy.distutils",
    "numpy.testing",
    "numpy.conftest",
    "numpy.lib.format",
    "numpy.lib.npyio",
    "numpy.lib.utils",
    "numpy.linalg.lapack_lite",
    "scipy.io",
    "scipy.datasets",
    "scipy.misc",
    "scipy.weave",
    "scipy.conftest",
    "scipy.linalg.blas",
    "scipy.linalg.lapack",
    "scipy.linalg.cython_blas",
    "scipy.linalg.cython_lapack",
    "scipy.special.cython_special",
    "scipy.odr",
    "sympy.external",
    "sympy.testing",
    "sympy.interactive",
    "sympy.plotting",
    "sympy.conftest",
    "sympy.printing.preview",
    "sympy.printing.gtk",
    "sympy.printing.llvmjitcode",
    "sympy.printing.theanocode",
    "sympy.printing.aesaracode",
    "sympy.printing.tensorflow",
    "sympy.utilities.autowrap",
    "sympy.utilities.codegen",
    "sympy.utilities.lambdify",
    "sympy.utilities.matchpy_connector",
    "sympy.utilities.runtests",
    "sympy.utilities.source",
    "sympy.utilities.pkgdata",
    "sympy.utilities.benchmarking",
    "sympy.utilities.pytest",
    "sympy.utilities.tmpfiles",
    "sympy.utilities._compilation",
    "sympy.parsing.ast_parser",
    "sympy.physics.secondquant",
    "mpmath.identification",
    "mpmath.tests",
)

#: Module roots whose *callables* may be handed to sandboxed code (C accelerators of allowed
#: modules and a few harmless bases), in addition to :data:`ALLOWED_MODULE_ROOTS`.
_CALLABLE_MODULE_ROOTS: frozenset[str] = ALLOWED_MODULE_ROOTS | frozenset(
    {
        "__main__",
        "builtins",
        "abc",
        "enum",
        "gmpy2",
        "flint",
        "_operator",
        "_functools",
        "_collections",
        "_collections_abc",
        "_heapq",
        "_bisect",
        "_random",
        "_decimal",
        "_pydecimal",
        "_statistics",
        "_datetime",
        "_pydatetime",
        "_sre",
        "_abc",
    }
)


def _denied_prefix(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in DENIED_MODULE_PREFIXES)


def module_allowed(name: str, *, for_import: bool = False) -> bool:
    """Whether sandboxed code may hold (or, with ``for_import``, import) module ``name``."""
    if not isinstance(name, str) or not name:
        return False
    parts = name.split(".")
    if parts[0] not in ALLOWED_MODULE_ROOTS:
        return False
    if for_import and any(p.startswith("_") for p in parts):
        return False
    return not _denied_prefix(name)


def _callable_module_allowed(name: object) -> bool:
    if name is None:
        return True
    if not isinstance(name, str):
        return False
    return name.split(".")[0] in _CALLABLE_MODULE_ROOTS and not _denied_prefix(name)


# --------------------------------------------------------------------------- attribute policy

#: Dunder methods sandboxed classes may define (none of them gives access to internals).
DEFINABLE_DUNDERS: frozenset[str] = frozenset(
    {
        "__init__",
        "__new__",
        "__repr__",
        "__str__",
        "__format__",
        "__hash__",
        "__bool__",
        "__len__",
        "__iter__",
        "__next__",
        "__reversed__",
        "__contains__",
        "__getitem__",
        "__setitem__",
        "__delitem__",
        "__missing__",
        "__call__",
        "__enter__",
        "__exit__",
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__neg__",
        "__pos__",
        "__abs__",
        "__invert__",
        "__complex__",
        "__int__",
        "__float__",
        "__index__",
        "__round__",
        "__trunc__",
        "__floor__",
        "__ceil__",
    }
    | {
        f"__{prefix}{op}__"
        for op in (
            "add",
            "sub",
            "mul",
            "matmul",
            "truediv",
            "floordiv",
            "mod",
            "divmod",
            "pow",
            "lshift",
            "rshift",
            "and",
            "xor",
            "or",
        )
        for prefix in ("", "r", "i")
    }
)

#: Dunder attributes sandboxed code may *read*: the definable methods (``super().__init__``)
#: and a few descriptive strings.
READABLE_DUNDERS: frozenset[str] = DEFINABLE_DUNDERS | frozenset(
    {"__name__", "__qualname__", "__doc__"}
)

#: Attribute names refused on every object: interpreter internals and raw-memory/file escapes.
BLOCKED_ATTRIBUTES: frozenset[str] = frozenset(INSPECT_ATTRIBUTES) | frozenset(
    {
        "cr_frame",
        "cr_code",
        "cr_await",
        "ag_frame",
        "ag_code",
        "ag_await",
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "f_back",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_code",
        "f_trace",
        "tb_frame",
        "tb_next",
        "co_code",
        "func_globals",
        "func_code",
        # numpy/scipy raw memory and file access
        "ctypes",
        "ctypeslib",
        "as_strided",
        "tofile",
        "fromfile",
        "memmap",
        "open_memmap",
        "DataSource",
        "loadtxt",
        "savetxt",
        "genfromtxt",
        "fromregex",
        "load_npz",
        "save_npz",
        "LowLevelCallable",
        "get_blas_funcs",
        "get_lapack_funcs",
        "runstring",
        "f2py",
        "distutils",
        # mpmath.identify evaluates its ``constants`` strings with eval()
        "identify",
    }
)

#: Names refused only on objects owned by these packages (common words elsewhere).
_OWNER_BLOCKED: dict[str, frozenset[str]] = {
    "numpy": frozenset({"load", "loads", "save", "savez", "savez_compressed", "dump", "dumps"}),
    "scipy": frozenset({"load", "loads", "save", "dump"}),
}


def _owner_root(obj: object) -> str:
    if isinstance(obj, types.ModuleType):
        name = obj.__name__
    elif isinstance(obj, type):
        name = getattr(obj, "__module__", "") or ""
    else:
        name = getattr(type(obj), "__module__", "") or ""
    return name.split(".")[0] if isinstance(name, str) else ""


def _check_attr_name(obj: object, name: object) -> str:
    if type(name) is not str:
        raise TypeError("attribute name must be string")
    if name.startswith("_") and name not in READABLE_DUNDERS:
        raise PolicyError(f"access to the attribute {name!r} is not allowed in the sandbox")
    if name in BLOCKED_ATTRIBUTES:
        raise PolicyError(f"access to the attribute {name!r} is not allowed in the sandbox")
    blocked = _OWNER_BLOCKED.get(_owner_root(obj))
    if blocked is not None and name in blocked:
        raise PolicyError(f"access to the attribute {name!r} is not allowed in the sandbox")
    return name


# Filled by _init_value_tables(): id -> reason / substitute. Identity, never equality.
_REFUSED_VALUES: dict[int, tuple[object, str]] = {}
_SUBSTITUTES: dict[int, tuple[object, object]] = {}
_TRUSTED: dict[int, object] = {}


def _refuse_value(value: object, reason: str) -> None:
    _REFUSED_VALUES[id(value)] = (value, reason)


def _substitute_value(value: object, replacement: object) -> None:
    _SUBSTITUTES[id(value)] = (value, replacement)
    _trust_value(replacement)


def _trust_value(value: object) -> None:
    _TRUSTED[id(value)] = value


def check_value(value: Any) -> Any:
    """Return ``value`` (or its safe substitute) if sandboxed code may hold it, else raise."""
    key = id(value)
    refused = _REFUSED_VALUES.get(key)
    if refused is not None and refused[0] is value:
        raise PolicyError(refused[1])
    sub = _SUBSTITUTES.get(key)
    if sub is not None and sub[0] is value:
        return sub[1]
    if _TRUSTED.get(key) is value:
        return value
    if isinstance(value, types.ModuleType):
        if not module_allowed(value.__name__):
            raise PolicyError(f"access to the module {value.__name__!r} is not allowed")
        return value
    if isinstance(value, (types.FrameType, types.CodeType, types.TracebackType)):
        raise PolicyError(f"access to {type(value).__name__} objects is not allowed")
    if isinstance(value, type):
        if issubclass(value, type):
            raise PolicyError(f"access to the metaclass {value.__name__!r} is not allowed")
        if not _callable_module_allowed(getattr(value, "__module__", None)):
            raise PolicyError(f"access to the class {value.__name__!r} is not allowed")
        return value
    if isinstance(value, functools.partial):
        check_value(value.func)
        return value
    func: object = value
    if isinstance(value, types.MethodType):
        func = value.__func__
    if isinstance(func, (types.FunctionType, types.BuiltinFunctionType)):
        module = getattr(func, "__module__", None)
        if isinstance(func, types.BuiltinFunctionType) and isinstance(
            getattr(func, "__self__", None), types.ModuleType
        ):
            module = func.__self__.__name__
        if not _callable_module_allowed(module):
            raise PolicyError(f"access to {module}.{getattr(func, '__name__', '?')} is not allowed")
    return value


# --------------------------------------------------------------------------- run-time guards


def guarded_getattr(obj: Any, name: str, *default: Any) -> Any:
    """``getattr`` for sandboxed code: name rules, then a check of the value read."""
    _check_attr_name(obj, name)
    if _POST_IMPORT_PATCHES and _PATCHED:
        apply_pending_patches()
    if name in ("format", "format_map") and (
        isinstance(obj, str) or (isinstance(obj, type) and issubclass(obj, str))
    ):
        return _safe_format_method(obj, name)
    try:
        value = getattr(obj, name)
    except AttributeError:
        if default:
            return default[0]
        raise
    return check_value(value)


def guarded_hasattr(obj: Any, name: str) -> bool:
    """``hasattr`` that answers False for attributes the policy hides."""
    try:
        guarded_getattr(obj, name)
    except (AttributeError, PolicyError):
        return False
    return True


def guarded_write(obj: Any) -> Any:
    """Target of item/attribute assignment: refuse modules and library classes."""
    if isinstance(obj, types.ModuleType):
        raise PolicyError(f"modifying the module {obj.__name__!r} is not allowed")
    if isinstance(obj, type) and obj.__dict__.get("__module__") != "__main__":
        raise PolicyError(f"modifying the class {obj.__name__!r} is not allowed")
    return obj


def guarded_setattr(obj: Any, name: str, value: Any) -> None:
    """``setattr`` with the assignment rules of ``obj.name = value``."""
    if type(name) is not str:
        raise TypeError("attribute name must be string")
    if name.startswith("_") or name in BLOCKED_ATTRIBUTES:
        raise PolicyError(f"setting the attribute {name!r} is not allowed in the sandbox")
    setattr(guarded_write(obj), name, value)


def guarded_delattr(obj: Any, name: str) -> None:
    """``delattr`` with the assignment rules of ``del obj.name``."""
    if type(name) is not str:
        raise TypeError("attribute name must be string")
    if name.startswith("_") or name in BLOCKED_ATTRIBUTES:
        raise PolicyError(f"deleting the attribute {name!r} is not allowed in the sandbox")
    delattr(guarded_write(obj), name)


def guarded_getitem(obj: Any, key: Any) -> Any:
    return obj[key]


def guarded_apply(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Calls with ``*args``/``**kwargs``: keyword names may not start with ``_`` (class
    factories such as ``sympy.Function(name, **attrs)`` turn keywords into attributes)."""
    for key in kwargs:
        if key.startswith("_"):
            raise PolicyError(f"the keyword argument {key!r} is not allowed in the sandbox")
    return func(*args, **kwargs)


def _passthrough_unpack(it: Any, spec: Any = None, _getiter_: Any = None) -> Any:
    return it


def safe_type(*args: Any) -> type:
    """One-argument ``type``; class creation and metaclasses stay out of reach."""
    if len(args) != 1:
        raise PolicyError("type() with three arguments (class creation) is not allowed")
    cls = type(args[0])
    if issubclass(cls, type):
        raise PolicyError("type() of a class (its metaclass) is not allowed")
    return cls


def _sandbox_print(
    *objects: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush=False
) -> None:
    if file is not None:
        raise PolicyError("print(file=...) is not allowed in the sandbox")
    builtins.print(*objects, sep=sep, end=end, file=sys.stdout, flush=flush)


class PrintTarget:
    """What RestrictedPython's ``_print_`` factory returns: prints go straight to the current
    ``sys.stdout`` (the step's capture buffer), so output order is the program's order."""

    __slots__ = ()

    def __init__(self, _getattr_: Any = None) -> None:
        pass

    def _call_print(self, *objects: Any, **kwargs: Any) -> None:
        _sandbox_print(*objects, **kwargs)

    def __call__(self) -> str:
        return ""


def _refused_builtin(name: str) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise PolicyError(f"{name}() is not allowed in the sandbox")

    refused.__name__ = name
    refused.__qualname__ = name
    return refused


def _exit(code: Any = None) -> None:
    raise SystemExit(code)


class _SafeFormatter(string.Formatter):
    """``str.format`` whose field names go through the attribute guard ("{0.__class__}")."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        import _string

        first, rest = _string.formatter_field_name_split(field_name)
        obj = self.get_value(first, args, kwargs)
        for is_attr, key in rest:
            obj = guarded_getattr(obj, key) if is_attr else obj[key]
        return obj, first


_FORMATTER = _SafeFormatter()


def _safe_format_method(obj: Any, name: str) -> Callable[..., str]:
    if isinstance(obj, str):
        if name == "format":
            return functools.partial(_FORMATTER.format, obj)
        return lambda mapping: _FORMATTER.vformat(obj, (), mapping)
    if name == "format":
        return lambda s, *a, **k: _FORMATTER.format(s, *a, **k)
    return lambda s, mapping: _FORMATTER.vformat(s, (), mapping)


def _safe_update_wrapper(
    wrapper: Any,
    wrapped: Any,
    assigned: Any = functools.WRAPPER_ASSIGNMENTS,
    updated: Any = functools.WRAPPER_UPDATES,
) -> Any:
    if tuple(assigned) != functools.WRAPPER_ASSIGNMENTS or tuple(updated) != (
        functools.WRAPPER_UPDATES
    ):
        raise PolicyError("functools.update_wrapper with custom attribute lists is not allowed")
    return functools.update_wrapper(wrapper, wrapped)


def _safe_wraps(
    wrapped: Any,
    assigned: Any = functools.WRAPPER_ASSIGNMENTS,
    updated: Any = functools.WRAPPER_UPDATES,
) -> Any:
    if tuple(assigned) != functools.WRAPPER_ASSIGNMENTS or tuple(updated) != (
        functools.WRAPPER_UPDATES
    ):
        raise PolicyError("functools.wraps with custom attribute lists is not allowed")
    return functools.wraps(wrapped)


# --------------------------------------------------------------------------- imports


class _ImportedNames:
    """What ``from m import a, b`` receives: only the checked (or substituted) values."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def guarded_import(
    name: str,
    globals: Any = None,
    locals: Any = None,
    fromlist: Any = (),
    level: int = 0,
) -> Any:
    """``__import__`` for sandboxed code: allowlisted modules only, values of ``from``
    imports checked like attribute reads."""
    if type(fromlist) is list and not fromlist and level == 0:
        # Only C code calls __import__ this way (PyImport_Import, e.g. numpy importing its own
        # submodules lazily while a step runs): it resolves __import__ through the builtins of
        # the calling Python frame, which is the sandboxed one. The statement forms compile to
        # fromlist=None or a tuple, and sandboxed code cannot reach this function directly.
        return builtins.__import__(name, globals, locals, fromlist, level)
    if level != 0:
        raise ImportError("relative imports are not allowed in the sandbox")
    if isinstance(name, str) and fromlist and _only_substituted_names(name, fromlist):
        # e.g. ``from sympy.utilities.lambdify import lambdify``: the module stays out of
        # reach, the names that have safe replacements do not.
        module = builtins.__import__(name, None, None, fromlist, 0)
        return _ImportedNames({item: check_value(getattr(module, item)) for item in fromlist})
    if not isinstance(name, str) or not module_allowed(name, for_import=True):
        raise ImportError(
            f"import of {name!r} is not allowed in the sandbox (allowed: "
            f"{', '.join(sorted(ALLOWED_MODULE_ROOTS))})",
            name=name if isinstance(name, str) else None,
        )
    module = builtins.__import__(name, None, None, fromlist or (), 0)
    if not fromlist:
        return module
    values: dict[str, Any] = {}
    for item in fromlist:
        if item == "*":
            continue
        _check_attr_name(module, item)
        try:
            value = getattr(module, item)
        except AttributeError:
            raise ImportError(f"cannot import name {item!r} from {name!r}", name=name) from None
        values[item] = check_value(value)
    return _ImportedNames(values)


def _only_substituted_names(name: str, fromlist: Any) -> bool:
    if module_allowed(name, for_import=True) or not module_allowed(name.split(".")[0]):
        return False
    module = sys.modules.get(name)
    if module is None:
        return False
    for item in fromlist:
        if not isinstance(item, str) or item.startswith("_"):
            return False
        value = getattr(module, item, None)
        sub = _SUBSTITUTES.get(id(value))
        if (sub is None or sub[0] is not value) and _TRUSTED.get(id(value)) is not value:
            return False
    return True


def import_star(name: str) -> None:
    """``from name import *`` at module level: copy the module's public, allowed names."""
    module = guarded_import(name)
    for part in name.split(".")[1:]:
        module = getattr(module, part)
    public = getattr(module, "__all__", None)
    names = (
        list(public)
        if isinstance(public, (list, tuple))
        else [n for n in dir(module) if not n.startswith("_")]
    )
    target = sys._getframe(1).f_globals
    for item in names:
        if not isinstance(item, str) or item.startswith("_"):
            continue
        try:
            _check_attr_name(module, item)
            target[item] = check_value(getattr(module, item))
        except (PolicyError, AttributeError):
            continue


# --------------------------------------------------------------------------- compile time


class SandboxTransformer(RestrictingNodeTransformer):
    """RestrictedPython's transformer, adjusted to run ordinary math code (see module doc).

    The guard functions it targets (``_getattr_``, ``_write_`` ...) are ours, so the
    unpacking and iteration wrappers RestrictedPython adds for Zope's guards are skipped: plain
    Python semantics are kept wherever no check is needed.
    """

    def check_name(
        self, node: ast.AST, name: str | None, allow_magic_methods: bool = False
    ) -> None:
        if name is None:
            return
        if name.startswith("_") and name != "_":
            if allow_magic_methods and name in DEFINABLE_DUNDERS:
                return
            if name == "__name__" and isinstance(getattr(node, "ctx", None), ast.Load):
                return
            self.error(node, f'"{name}" is an invalid name because it starts with "_"')
        elif name.endswith("__roles__"):
            self.error(node, f'"{name}" is an invalid name')
        elif name in ("print", "builtins", "breakpoint") and not isinstance(
            getattr(node, "ctx", None), ast.Load
        ):
            self.error(node, f'"{name}" is a reserved name')

    def visit_Name(self, node: ast.Name) -> Any:
        if isinstance(node.ctx, ast.Load) and node.id == "print":
            self.print_info.print_used = True
            new_node = ast.Attribute(
                value=ast.Name("_print", ast.Load()), attr="_call_print", ctx=ast.Load()
            )
            copy_locations(new_node, node)
            return new_node
        self.check_name(node, node.id)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        attr = node.attr
        loading = isinstance(node.ctx, ast.Load)
        if attr.startswith("_") and attr != "_" and not (loading and attr in READABLE_DUNDERS):
            self.error(node, f'"{attr}" is an invalid attribute name because it starts with "_"')
        elif attr in BLOCKED_ATTRIBUTES:
            self.error(node, f'"{attr}" is a restricted attribute in the sandbox')
        node = self.node_contents_visit(node)
        if loading:
            new_node = ast.Call(
                func=ast.Name("_getattr_", ast.Load()),
                args=[node.value, ast.Constant(attr)],
                keywords=[],
            )
            copy_locations(new_node, node)
            return new_node
        new_value = ast.Call(func=ast.Name("_write_", ast.Load()), args=[node.value], keywords=[])
        copy_locations(new_value, node.value)
        node.value = new_value
        return node

    def visit_keyword(self, node: ast.keyword) -> Any:
        if node.arg is not None and node.arg.startswith("_"):
            self.error(node, f'the keyword argument "{node.arg}" starts with "_"')
        return self.node_contents_visit(node)

    def guard_iter(self, node: Any) -> Any:
        return self.node_contents_visit(node)

    def visit_Assign(self, node: ast.Assign) -> Any:
        return self.node_contents_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> Any:
        return self.node_contents_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> Any:
        return self.node_contents_visit(node)

    def visit_With(self, node: ast.With) -> Any:
        return self.node_contents_visit(node)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> Any:
        return self.node_contents_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> Any:
        self.check_name(node, node.name)
        if any(k.arg == "metaclass" for k in node.keywords):
            self.error(node, 'the keyword argument "metaclass" is not allowed')
        return self.node_contents_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> Any:
        if node.level:
            self.error(node, "relative imports are not allowed in the sandbox")
            return node
        if len(node.names) == 1 and node.names[0].name == "*":
            if node.level or not node.module:
                self.error(node, "relative star imports are not allowed")
                return node
            call = ast.Expr(
                value=ast.Call(
                    func=ast.Name("_import_star_", ast.Load()),
                    args=[ast.Constant(node.module)],
                    keywords=[],
                )
            )
            copy_locations(call, node)
            ast.fix_missing_locations(call)
            return call
        return self.check_import_names(node)


def _string_annotation_errors(tree: ast.AST) -> list[str]:
    """``typing.get_type_hints`` (used by ``functools.singledispatch``) evaluates string
    annotations with ``eval`` outside any guard, so they are refused."""
    annotations: list[tuple[int, ast.AST]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            annotations.append((node.lineno, node.annotation))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            annotations.append((node.lineno, node.returns))
        elif isinstance(node, ast.AnnAssign):
            annotations.append((node.lineno, node.annotation))
    errors = []
    for lineno, annotation in annotations:
        for sub in ast.walk(annotation):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, (str, bytes)):
                errors.append(f"Line {lineno}: string annotations are not allowed in the sandbox")
                break
    return errors


def parse_block(source: str, first_line: int = 1, filename: str = "<string>") -> ast.Module:
    """Parse one code block whose first line is line ``first_line`` of the whole program, so
    that tracebacks and syntax errors carry the line numbers of the concatenated program."""
    try:
        tree = ast.parse(source, filename, "exec")
    except SyntaxError as exc:
        if exc.lineno is not None:
            exc.lineno += first_line - 1
        if getattr(exc, "end_lineno", None) is not None:
            exc.end_lineno += first_line - 1
        raise
    if first_line != 1:
        ast.increment_lineno(tree, first_line - 1)
    return tree


def restrict(tree: ast.Module) -> ast.Module:
    """Apply the policy to a parsed module; raise :class:`PolicyError` listing the refusals."""
    errors: list[str] = _string_annotation_errors(tree)
    warnings: list[str] = []
    used: dict[str, bool] = {}
    SandboxTransformer(errors, warnings, used).visit(tree)
    if errors:
        raise PolicyError("; ".join(errors))
    return ast.fix_missing_locations(tree)


def compile_restricted_module(
    source: str, first_line: int = 1, filename: str = "<string>"
) -> types.CodeType:
    """Parse, restrict and compile one block (see :func:`parse_block`)."""
    return compile(restrict(parse_block(source, first_line, filename)), filename, "exec")


# --------------------------------------------------------------------------- namespaces

_SAFE_BUILTIN_NAMES = (  # noqa: SIM905
    "None False True Ellipsis NotImplemented abs all any ascii bin bool bytearray bytes "
    "callable chr classmethod complex dict dir divmod enumerate filter float format frozenset "
    "hash hex id int isinstance issubclass iter len list map max memoryview min next object oct "
    "ord pow property range repr reversed round set slice sorted staticmethod str sum super "
    "tuple zip __build_class__"
).split()

_REFUSED_BUILTIN_NAMES = (
    "eval",
    "exec",
    "compile",
    "open",
    "input",
    "globals",
    "locals",
    "vars",
    "breakpoint",
    "help",
)


def _build_safe_builtins() -> dict[str, Any]:
    safe: dict[str, Any] = {name: getattr(builtins, name) for name in _SAFE_BUILTIN_NAMES}
    for name, value in vars(builtins).items():
        if isinstance(value, type) and issubclass(value, BaseException):
            safe[name] = value
    for name in _REFUSED_BUILTIN_NAMES:
        safe[name] = _refused_builtin(name)
    safe.update(
        {
            "getattr": guarded_getattr,
            "hasattr": guarded_hasattr,
            "setattr": guarded_setattr,
            "delattr": guarded_delattr,
            "type": safe_type,
            "exit": _exit,
            "quit": _exit,
            "__import__": guarded_import,
            "__metaclass__": type,
            "_getattr_": guarded_getattr,
            "_write_": guarded_write,
            "_getitem_": guarded_getitem,
            "_getiter_": iter,
            "_apply_": guarded_apply,
            "_print_": PrintTarget,
            "_import_star_": import_star,
            "_unpack_sequence_": _passthrough_unpack,
            "_iter_unpack_sequence_": _passthrough_unpack,
        }
    )
    return safe


SAFE_BUILTINS: dict[str, Any] = _build_safe_builtins()
for _value in SAFE_BUILTINS.values():
    if callable(_value) and not isinstance(_value, type):
        _trust_value(_value)
_trust_value(PrintTarget)


def new_namespace() -> dict[str, Any]:
    """A fresh global namespace for one trajectory, like ``python -c``'s ``__main__``."""
    return {"__name__": "__main__", "__doc__": None, "__builtins__": SAFE_BUILTINS}


def _init_value_tables() -> None:
    for name in (*_REFUSED_BUILTIN_NAMES, "__import__", "type"):
        _refuse_value(getattr(builtins, name), f"{name} is not allowed in the sandbox")
    _refuse_value(operator.attrgetter, "operator.attrgetter is not allowed in the sandbox")
    _refuse_value(operator.methodcaller, "operator.methodcaller is not allowed in the sandbox")
    _substitute_value(builtins.getattr, guarded_getattr)
    _substitute_value(builtins.hasattr, guarded_hasattr)
    _substitute_value(builtins.setattr, guarded_setattr)
    _substitute_value(builtins.delattr, guarded_delattr)
    _substitute_value(builtins.print, _sandbox_print)
    _substitute_value(functools.update_wrapper, _safe_update_wrapper)
    _substitute_value(functools.wraps, _safe_wraps)


_init_value_tables()


# --------------------------------------------------------------------------- library patches

_SYMPY_EVAL_FILENAME = "<sympy-restricted>"
_PATCHED = False


def _restricted_eval_code(source: Any) -> types.CodeType:
    if isinstance(source, str):
        tree: ast.AST = ast.parse(source.strip(), _SYMPY_EVAL_FILENAME, "eval")
    elif isinstance(source, ast.Expression):
        tree = source
    else:
        raise PolicyError("sympy parsing produced an unexpected code object")
    errors: list[str] = []
    SandboxTransformer(errors, [], {}).visit(tree)
    if errors:
        raise PolicyError("; ".join(errors))
    ast.fix_missing_locations(tree)
    return compile(tree, _SYMPY_EVAL_FILENAME, "eval")


def _sympy_compile(source: Any, filename: str = "", mode: str = "eval", *args: Any) -> Any:
    """Replaces ``compile`` inside ``sympy.parsing.sympy_parser`` (``evaluate=False``)."""
    return _restricted_eval_code(source)


def _sympy_eval_expr(code: Any, local_dict: dict[str, Any], global_dict: dict[str, Any]) -> Any:
    """Replaces ``sympy.parsing.sympy_parser.eval_expr``: the parser's output is evaluated as
    restricted code, with the dangerous builtins the parser adds to its namespace removed."""
    if isinstance(code, types.CodeType):
        if code.co_filename != _SYMPY_EVAL_FILENAME:
            raise PolicyError("sympy parsing produced an unexpected code object")
    else:
        code = _restricted_eval_code(code)
    namespace: dict[str, Any] = {}
    for key, value in global_dict.items():
        if not isinstance(key, str) or key.startswith("_"):
            continue
        try:
            namespace[key] = check_value(value)
        except PolicyError:
            continue
    namespace["__builtins__"] = SAFE_BUILTINS
    return eval(code, namespace, local_dict)


def _lambdify_reserved_names() -> frozenset[str]:
    names: set[str] = set(dir(builtins)) | set(keyword.kwlist)
    for module_name in ("math", "cmath", "numpy", "mpmath", "sympy", "scipy", "scipy.special"):
        module = sys.modules.get(module_name)
        if module is not None:
            names.update(dir(module))
    return frozenset(names)


def _make_safe_lambdify(original: Callable[..., Any]) -> Callable[..., Any]:
    """``lambdify`` prints the expression to Python source and ``exec``s it, so a symbol or
    function name is code. The safe version renames every symbol to a fresh ``Dummy`` (its
    printed name is generated), and accepts other named atoms only if their names are plain
    identifiers that resolve to nothing in the generated function's namespace."""
    import sympy
    from sympy.core.function import AppliedUndef

    allowed_modules = {"math", "mpmath", "numpy", "sympy", "scipy", "cmath"}
    reserved: list[frozenset[str]] = []

    def check_modules(modules: Any) -> None:
        if modules is None:
            return
        items = modules if isinstance(modules, (list, tuple)) else [modules]
        for item in items:
            if isinstance(item, str):
                if item not in allowed_modules:
                    raise PolicyError(f"lambdify(modules={item!r}) is not allowed")
            elif isinstance(item, dict):
                for key in item:
                    if not isinstance(key, str) or key.startswith("_"):
                        raise PolicyError("lambdify module dictionaries need public names")
            elif isinstance(item, types.ModuleType):
                check_value(item)
            else:
                raise PolicyError(f"lambdify(modules=...) does not accept {type(item).__name__}")

    def symbols_in(obj: Any, found: set[Any]) -> None:
        if isinstance(obj, str):
            raise PolicyError("lambdify of a string is not allowed in the sandbox")
        if isinstance(obj, sympy.Basic):
            found.update(obj.atoms(sympy.Symbol))
        elif isinstance(obj, sympy.MatrixBase):
            for entry in obj:
                symbols_in(entry, found)
        elif isinstance(obj, dict):
            for key, value in obj.items():
                symbols_in(key, found)
                symbols_in(value, found)
        elif isinstance(obj, (list, tuple, set, frozenset)):
            for item in obj:
                symbols_in(item, found)

    def rename(obj: Any, mapping: dict[Any, Any]) -> Any:
        if isinstance(obj, (sympy.Basic, sympy.MatrixBase)):
            return obj.xreplace(mapping)
        if isinstance(obj, dict):
            return {rename(k, mapping): rename(v, mapping) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(rename(item, mapping) for item in obj)
        return obj

    def check_names(obj: Any) -> None:
        if not reserved:
            reserved.append(_lambdify_reserved_names())
        nodes: Iterable[Any]
        if isinstance(obj, sympy.Basic):
            nodes = sympy.preorder_traversal(obj)
        elif isinstance(obj, sympy.MatrixBase):
            nodes = [node for entry in obj for node in sympy.preorder_traversal(entry)]
        elif isinstance(obj, dict):
            for key, value in obj.items():
                check_names(key)
                check_names(value)
            return
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                check_names(item)
            return
        else:
            return
        for node in nodes:
            if isinstance(node, sympy.Dummy):
                continue
            names = []
            if isinstance(node, AppliedUndef):
                names.append(node.func.__name__)
            name = getattr(node, "name", None)
            if isinstance(name, str):
                names.append(name)
            for item in names:
                if (
                    not item.isidentifier()
                    or keyword.iskeyword(item)
                    or item.startswith("_")
                    or item in reserved[0]
                ):
                    raise PolicyError(f"lambdify of the name {item!r} is not allowed")

    def lambdify(
        args: Any,
        expr: Any,
        modules: Any = None,
        printer: Any = None,
        use_imps: bool = True,
        dummify: bool = False,
        cse: Any = False,
        docstring_limit: int | None = 1000,
    ) -> Any:
        if printer is not None:
            raise PolicyError("lambdify(printer=...) is not allowed in the sandbox")
        check_modules(modules)
        found: set[Any] = set()
        symbols_in(args, found)
        symbols_in(expr, found)
        mapping = {s: sympy.Dummy(**s.assumptions0) for s in found}
        args, expr = rename(args, mapping), rename(expr, mapping)
        check_names(args)
        check_names(expr)
        return original(
            args,
            expr,
            modules=modules,
            use_imps=use_imps,
            dummify=dummify,
            cse=cse,
            docstring_limit=docstring_limit,
        )

    lambdify.__doc__ = original.__doc__
    return lambdify


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _patch_rich_result(module: types.ModuleType) -> bool:
    """scipy's result objects (``OptimizeResult`` ...) are dicts whose keys read as
    attributes, so a key like ``"__array_interface__"`` would reach numpy as that protocol
    (a raw pointer). Dunder names no longer resolve to keys."""
    cls = getattr(module, "_RichResult", None)
    original = getattr(cls, "__getattr__", None)
    if cls is None or original is None:
        return False

    def __getattr__(self: Any, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return original(self, name)

    cls.__getattr__ = __getattr__
    return True


#: Patches applied as soon as the module appears (scipy is not pre-imported).
_POST_IMPORT_PATCHES: dict[str, Callable[[types.ModuleType], bool]] = {
    "scipy._lib._util": _patch_rich_result,
}


def apply_pending_patches() -> None:
    """Apply the post-import patches whose modules have been imported meanwhile."""
    for name in list(_POST_IMPORT_PATCHES):
        module = sys.modules.get(name)
        if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
            continue  # not imported, or still executing its body
        if not _POST_IMPORT_PATCHES[name](module):
            raise PolicyError(f"could not secure {name}; refusing to continue")
        del _POST_IMPORT_PATCHES[name]


def _install_import_hook() -> None:
    original = builtins.__import__

    def hooked_import(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        module = original(name, globals, locals, fromlist, level)
        if _POST_IMPORT_PATCHES:
            apply_pending_patches()
        return module

    builtins.__import__ = hooked_import


def install_library_patches() -> None:
    """Route the eval/exec paths of the allowed libraries through the policy. Idempotent.

    Called once per worker after the pre-imports and before any step runs; modules imported
    later by a step are covered by the attribute/import checks (denied subtrees), and sympy's
    parser and ``lambdify`` are patched here as soon as sympy is loaded.
    """
    global _PATCHED
    if _PATCHED or "sympy" not in sys.modules:
        return
    import sympy
    import sympy.parsing.sympy_parser
    import sympy.utilities.lambdify

    sympy_parser = sys.modules["sympy.parsing.sympy_parser"]
    lambdify_module = sys.modules["sympy.utilities.lambdify"]

    sympy_parser.eval_expr = _sympy_eval_expr
    sympy_parser.compile = _sympy_compile  # shadows the builtin inside that module only
    original = lambdify_module.lambdify
    safe = _make_safe_lambdify(original)
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("sympy") or module is None:
            continue
        if getattr(module, "lambdify", None) is original:
            try:
                module.lambdify = safe
            except (AttributeError, TypeError):
                continue
    _substitute_value(original, safe)
    _substitute_value(sympy.init_printing, _noop)
    apply_pending_patches()
    if _POST_IMPORT_PATCHES:
        _install_import_hook()
    _PATCHED = True
