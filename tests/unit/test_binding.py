"""binding: the same results and errors as inspect.Signature.bind."""

from __future__ import annotations

import inspect

import pytest

from zenbuild.binding import params_of


def f(a, b=2, /, c=3, *args, d, e=5, **kw):
    return (a, b, c, args, d, e, kw)


def g(x, y=1):
    return (x, y)


CASES = [
    (f, (1,), {"d": 4}),
    (f, (1, 2, 3, 4, 5), {"d": 1, "z": 2}),
    (f, (), {"d": 1}),
    (g, (1, 2, 3), {}),
    (g, (1,), {"x": 2}),
    (g, (1,), {}),
    (g, (), {"y": 3, "x": 0}),
]


@pytest.mark.parametrize("fn,args,kwargs", CASES)
def test_bind_matches_inspect(fn, args, kwargs):
    try:
        ref = inspect.signature(fn).bind(*args, **kwargs)
        ref.apply_defaults()
        expected = dict(ref.arguments)
    except TypeError:
        with pytest.raises(TypeError):
            params_of(fn).bind(args, kwargs)
        return
    got, explicit = params_of(fn).bind(args, kwargs)
    assert got == expected
    assert list(got) == list(expected)
    p = params_of(fn)
    call_args, call_kwargs = p.call_args(got)
    assert fn(*call_args, **call_kwargs) == fn(*args, **kwargs)
    assert set(explicit) <= set(got) | set(kwargs)


def test_callable_object_falls_back_to_inspect():
    class C:
        def __call__(self, x, y=2):
            return x * y

    p = params_of(C())
    got, _ = p.bind((3,), {})
    assert got == {"x": 3, "y": 2}
