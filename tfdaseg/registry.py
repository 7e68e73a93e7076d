"""A name -> factory registry, so CLIs look things up instead of branching on names."""

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """Maps names to objects (factories, classes, modules) of one kind.

  Args:
    kind: What the registry holds, used in error messages ("dataset", "model", ...).

  Example:
    >>> MODELS = Registry("model")
    >>> @MODELS.register("tiny")
    ... def build_tiny(): ...
    >>> MODELS.get("tiny") is build_tiny
    True
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._items: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    """Returns a decorator that registers its argument under `name`."""

    def decorator(item: T) -> T:
      if name in self._items:
        raise ValueError(f"{self.kind} {name!r} is already registered")
      self._items[name] = item
      return item

    return decorator

  def get(self, name: str) -> T:
    """Returns the item registered under `name`.

    Raises:
      KeyError: with the list of known names, when `name` is unknown.
    """
    try:
      return self._items[name]
    except KeyError:
      raise KeyError(
          f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}"
      ) from None

  def names(self) -> list[str]:
    """Returns the registered names, sorted."""
    return sorted(self._items)

  def __contains__(self, name: str) -> bool:
    return name in self._items

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())
