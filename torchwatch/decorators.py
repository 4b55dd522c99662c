"""``@watch_epoch`` and ``@watch_step``, built on wrapt so signatures, docstrings and methods work.

``instance`` (wrapt's bound object) lets a decorated ``Trainer.train_epoch`` find ``self`` or
``self.model``. Both decorators work bare and with arguments.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import wrapt

from .compiled import speedups
from .phase import ACTIVE, Phase
from .steps import Tensor, first_tensor_rows

__all__ = ["watch_epoch", "watch_step"]


def _refuse_generators(wrapped: Callable, decorator: str) -> None:
    wrapped = getattr(wrapped, "__func__", wrapped)  # a classmethod or staticmethod object
    if inspect.isgeneratorfunction(wrapped) or inspect.isasyncgenfunction(wrapped):
        kind = "generator"
    elif inspect.iscoroutinefunction(wrapped):
        kind = "async"
    else:
        return
    raise TypeError(
        f"@{decorator} cannot watch {kind} function {wrapped.__qualname__}(): its body runs "
        "after the call returns; decorate a plain function, or use `with tw.phase(...)` inside it"
    )


def _check_names(names: Any) -> Optional[tuple]:
    if names is None:
        return None
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"names must be a sequence of str, e.g. ('loss', 'acc'), got {names!r}")
    return tuple(names)


def _epoch_position(wrapped: Callable) -> Tuple[Optional[int], bool]:
    """Where a caller's ``epoch`` can be: the index of a positional ``epoch`` parameter (-1 when
    it can only be a keyword, ``**kwargs`` included; None when nowhere), and whether the signature
    counts a ``self``/``cls`` that wrapt will not pass in ``args`` (plain functions defined in a
    class and classmethod/staticmethod objects; a bound method's signature has none)."""
    descriptor = isinstance(wrapped, (classmethod, staticmethod))
    function = wrapped.__func__ if descriptor else wrapped
    counts_self = not inspect.ismethod(wrapped) and not isinstance(wrapped, staticmethod)
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return None, counts_self
    for i, p in enumerate(params):
        if p.name == "epoch":
            positional = p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            return (i if positional else -1), counts_self
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return -1, counts_self
    return None, counts_self


def _positional_names(wrapped: Callable) -> List[str]:
    """The names of ``wrapped``'s positional parameters, ``self``/``cls`` included where the
    signature has one (see ``_epoch_position``); [] when it has no signature."""
    function = wrapped.__func__ if isinstance(wrapped, (classmethod, staticmethod)) else wrapped
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _found_modules(instance: Any, args: tuple, kwargs: dict,
                   names: List[str]) -> Dict[str, torch.nn.Module]:
    """The modules among a call's arguments (and ``self`` or ``self.model``), by the name the
    function gives each (``names``: its positional parameters, after any ``self``)."""
    found: Dict[str, torch.nn.Module] = {}
    if isinstance(instance, torch.nn.Module):
        found["self"] = instance
    elif isinstance(getattr(instance, "model", None), torch.nn.Module):
        found["self.model"] = instance.model
    for i, value in enumerate(args):
        if isinstance(value, torch.nn.Module):
            found[names[i] if i < len(names) else f"argument {i + 1}"] = value
    for key, value in kwargs.items():
        if isinstance(value, torch.nn.Module):
            found[key] = value
    return found


def _explicit_epoch(position: Optional[int], skip_self: bool, args: tuple, kwargs: dict) -> Any:
    """The ``epoch`` the caller passed (a parameter's default does not count)."""
    if position is None:
        return None
    if "epoch" in kwargs:
        return kwargs["epoch"]
    if position >= 0:
        index = position - 1 if skip_self else position
        if 0 <= index < len(args):
            return args[index]
    return None


def _run_of(run: Any) -> Any:
    if run is not None:
        return run
    from .run import current_run

    return current_run()


def watch_epoch(
    wrapped: Any = None,
    phase: Any = "train",
    *,
    model: Any = None,
    names: Optional[Sequence[str]] = None,
    train: Optional[bool] = None,
    run: Any = None,
) -> Any:
    """Each call of the decorated function is one phase; its return value passes through and is
    captured (a lone value as ``loss``). ``@watch_epoch`` or ``@watch_epoch("val", model=m)``."""
    if isinstance(wrapped, str):  # @watch_epoch("val")
        wrapped, phase = None, wrapped
    if wrapped is None:
        return functools.partial(watch_epoch, phase=phase, model=model, names=names,
                                 train=train, run=run)
    if not isinstance(phase, str) or not phase:
        raise TypeError(f"phase must be a non-empty str, got {phase!r}")
    _refuse_generators(wrapped, "watch_epoch")
    names = _check_names(names)
    position, counts_self = _epoch_position(wrapped)
    positional = _positional_names(wrapped)
    label = f"{phase} phase of {getattr(wrapped, '__qualname__', wrapped)}()"
    returned_by = f"returned by {getattr(wrapped, '__qualname__', wrapped)}()"

    @wrapt.decorator
    def wrapper(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        active = _run_of(run)
        # wrapt passes args without self/cls when it has an instance
        epoch = _explicit_epoch(position, counts_self and instance is not None, args, kwargs)
        if not isinstance(epoch, numbers.Integral) or isinstance(epoch, bool):
            if isinstance(epoch, torch.Tensor) and active.enabled:  # not read: it could sync
                active.once(
                    ("tensor epoch", label),
                    f"torchwatch: the epoch argument of {label} is a tensor, which is not read "
                    "(that could wait for the device), so epochs are counted instead; pass "
                    "int(epoch)",
                )
            epoch = None
        if model is not None:
            models = None
        else:
            skip = 1 if counts_self and instance is not None and positional else 0
            found = _found_modules(instance, args, kwargs, positional[skip:])
            models = active.models_for(None, label, found)
        with Phase(active, phase, model, train=train, epoch=epoch, models=models,
                   source=label) as p:
            result = wrapped(*args, **kwargs)
            p.capture(result, names, returned_by)
        return result

    return wrapper(wrapped)


def _capture(phase: Phase, result: Any, names: Optional[Sequence[str]], source: str) -> None:
    """A watched step's return value, recorded as ``tw.log`` records it. A lone 0-dim real
    tensor (the usual returned loss) goes to the compiled ``tw.log``, as ``tw.log(loss)`` would:
    it reads a CPU scalar on the host at once. Anything else goes to the phase, whose messages
    name the function it came from."""
    if (names is None and type(result) is Tensor and speedups is not None and not result.ndim
            and not result.is_complex()):
        speedups.log(result)  # into ACTIVE[-1], which is ``phase`` again once the step returned
    else:
        phase.log(result, None, {}, names, source)


def watch_step(
    wrapped: Any = None, *, names: Optional[Sequence[str]] = None, run: Any = None
) -> Any:
    """Each call is one step (unless already inside a ``tw.steps`` step); its return value is
    captured as by ``tw.log``, weighted by the samples of the step."""
    if wrapped is None:
        return functools.partial(watch_step, names=names, run=run)
    _refuse_generators(wrapped, "watch_step")
    names = _check_names(names)
    source = f"returned by {getattr(wrapped, '__qualname__', wrapped)}()"

    @wrapt.decorator
    def wrapper(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        if not ACTIVE:
            from .run import outside

            outside("@watch_step", run)
            return wrapped(*args, **kwargs)
        phase = ACTIVE[-1]
        if phase.in_step or not phase.on:
            result = wrapped(*args, **kwargs)
            if result is not None:
                _capture(phase, result, names, source)
            return result
        rows = first_tensor_rows(args) or 0
        phase.step_weight = rows or 1.0
        try:
            result = wrapped(*args, **kwargs)
            if result is not None:
                _capture(phase, result, names, source)
        finally:
            phase.step_weight = None
        phase.end_step(rows, 0.0)
        return result

    return wrapper(wrapped)
