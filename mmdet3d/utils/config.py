"""BEVFusion-style YAML configs.

Loading ``configs/a/b/c.yaml`` merges ``configs/default.yaml``, ``configs/a/default.yaml``,
``configs/a/b/default.yaml`` and then ``c.yaml`` (dicts merge deeply; scalars, lists and ``null`` replace), applies
command-line overrides ``--a.b value`` (values typed as YAML), and finally evaluates every ``${expr}`` string as a
Python expression over the merged tree (``${image_size}``, ``${[x / 8 for x in image_size]}``, ``${model.heads}``).

Two additions to BEVFusion's format: a dict holding ``_delete_: true`` replaces the inherited dict instead of
merging into it (as in mmcv), and a file may name ``_base_: <path or list of paths>`` (relative to itself); the
whole chain of each base is merged before that file. It lets ``configs/synthetic`` reuse the nuScenes tree instead of
copying it.
"""
import os

import yaml
from mmengine.config import Config
from torchpack.utils.io import load as load_yaml

CONFIG_ROOT_NAME = "configs"


class ConfigError(ValueError):
    """A config that cannot be loaded: the message names the file and the key."""


def _read(file):
    try:
        content = load_yaml(file)
    except yaml.YAMLError as e:
        raise ConfigError(f"{file}: invalid YAML ({e})") from e
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"{file}: the top level must be a mapping, got {type(content).__name__}")
    return content


def _folder_chain(path):
    folders = []
    folder = os.path.dirname(path)
    while True:
        folders.append(folder)
        if os.path.basename(folder) == CONFIG_ROOT_NAME or os.path.dirname(folder) == folder:
            break
        folder = os.path.dirname(folder)
    chain = [os.path.join(f, "default.yaml") for f in reversed(folders)]
    return [f for f in chain if os.path.isfile(f) and f != path] + [path]


def config_chain(path, _visiting=()):
    """The files merged for ``path``, in order: the chains of its ``_base_`` files, then every ``default.yaml`` from
    the ``configs`` root down (each preceded by the chains of its own bases), then ``path``. A file already merged
    is not merged again."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    if path in _visiting:
        raise ConfigError(f"{path}: _base_ cycle through {' -> '.join(_visiting)}")

    def bases(file):
        names = _read(file).get("_base_") or []
        out = []
        for base in [names] if isinstance(names, str) else names:
            base_path = os.path.join(os.path.dirname(file), base)
            if not os.path.isfile(base_path):
                raise ConfigError(f"{file}: _base_ file not found: {base_path}")
            out += config_chain(base_path, _visiting + (path,))
        return out

    *defaults, leaf = _folder_chain(path)
    chain = bases(leaf)
    for file in defaults:
        chain += bases(file) + [file]
    chain.append(leaf)
    seen = set()
    return [f for f in chain if not (f in seen or seen.add(f))]


def split_cli_overrides(argv):
    """``['--a.b', '1', '--c=x']`` -> ``[('a.b', '1'), ('c', 'x')]``; a dangling flag is an error."""
    pairs = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise ConfigError(f"override '{token}' must look like --key.subkey value")
        token = token[2:]
        if "=" in token:
            key, value = token.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(argv):
                raise ConfigError(f"override --{token} has no value")
            key, value = token, argv[i + 1]
            i += 2
        pairs.append((key, value))
    return pairs


def apply_overrides(tree, overrides, source="command line", defer_expressions=False):
    """Sets ``key.sub = yaml(value)`` for each pair; the key must already exist in the merged tree.

    With ``defer_expressions``, a key below a ``${}`` subtree (``model.encoders.camera.backbone.depth`` while
    ``backbone`` is ``${resnet50_backbone}``) is not set but returned, to be applied once the tree is evaluated.
    """
    deferred = []
    for key, raw in overrides:
        node = tree
        parts = key.split(".")
        for depth, part in enumerate(parts):
            if defer_expressions and _is_expression(node):
                deferred.append((key, raw))
                break
            if not isinstance(node, dict) or part not in node:
                missing = ".".join(parts[: depth + 1])
                raise ConfigError(f"override --{key} from the {source}: key '{missing}' exists nowhere in the config")
            if depth < len(parts) - 1:
                node = node[part]
        else:
            node[parts[-1]] = _override_value(key, raw)
    return deferred if defer_expressions else tree


def _override_value(key, raw):
    try:
        value = yaml.safe_load(raw) if isinstance(raw, str) else raw
    except yaml.YAMLError as e:
        raise ConfigError(f"override --{key}: value {raw!r} is not valid YAML ({e})") from e
    return _float_if_numeric(value)


def _float_if_numeric(value):
    # PyYAML follows YAML 1.1, where "3e-4" (no dot) is a string; on a command line it is meant as a number.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def merge_into(tree, update):
    """torchpack's merge (dicts merge deeply; scalars, lists and null replace), plus mmcv's ``_delete_: true``: a dict
    carrying it replaces the old value instead of merging into it."""
    for key, value in update.items():
        if isinstance(value, dict):
            value = dict(value)
            if value.pop("_delete_", False) or not isinstance(tree.get(key), dict):
                tree[key] = {}
            merge_into(tree[key], value)
        else:
            tree[key] = value
    return tree


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# Names an expression may use besides the config's top-level keys: ``join`` builds paths (``dataset_root`` may be
# given with or without a trailing slash).
EXPRESSION_GLOBALS = {"__builtins__": __builtins__, "join": os.path.join}


def _is_expression(value):
    return isinstance(value, str) and value.startswith("${") and value.endswith("}")


class _Evaluator:
    """Resolves ``${}`` lazily: a name used in an expression is itself resolved first, so expressions may refer to
    keys that are expressions (``a: ${b * 2}``, ``b: ${c + 1}``); cycles are reported."""

    def __init__(self, tree, filename):
        self.tree, self.filename = tree, filename
        self.cache, self.active = {}, []

    def raw(self, path):
        node = self.tree
        for key in path:
            node = node[key]
        return node

    def value(self, path):
        if path in self.cache:
            return self.cache[path]
        raw = self.raw(path)
        if isinstance(raw, dict):
            out = {k: self.value(path + (k,)) for k in raw}
        elif isinstance(raw, list):
            out = [self.value(path + (i,)) for i in range(len(raw))]
        elif _is_expression(raw):
            out = self._evaluate(raw[2:-1], path)
        else:
            out = raw
        self.cache[path] = out
        return out

    def _evaluate(self, expr, path):
        where = ".".join(str(p) for p in path)
        if path in self.active:
            chain = " -> ".join(".".join(map(str, p)) for p in self.active + [path])
            raise ConfigError(f"{self.filename}: key '{where}': ${{}} references form a cycle: {chain}")
        self.active.append(path)
        try:
            result = eval(expr, EXPRESSION_GLOBALS, _Scope(self, ()))
            return self.materialise(result)
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(f"{self.filename}: key '{where}': cannot evaluate ${{{expr}}}: "
                              f"{type(e).__name__}: {e}") from e
        finally:
            self.active.pop()

    def materialise(self, obj):
        if isinstance(obj, _Scope):
            return self.value(obj.path)
        if isinstance(obj, dict):
            return {k: self.materialise(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.materialise(v) for v in obj]
        return obj


class _Scope:
    """A config subtree seen from an expression: names and attributes resolve to evaluated values."""

    def __init__(self, evaluator, path):
        self.evaluator, self.path = evaluator, path

    def _child(self, key):
        node = self.evaluator.raw(self.path)
        if not isinstance(node, dict) or key not in node:
            raise KeyError(key)
        if isinstance(node[key], dict):
            return _Scope(self.evaluator, self.path + (key,))
        return self.evaluator.value(self.path + (key,))

    def __getitem__(self, key):
        return self._child(key)

    def __getattr__(self, key):
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self._child(key)
        except KeyError as e:
            raise AttributeError(f"config has no key '{'.'.join(map(str, self.path + (key,)))}'") from e

    def get(self, key, default=None):
        try:
            return self._child(key)
        except KeyError:
            return default

    def keys(self):
        return self.evaluator.raw(self.path).keys()


def evaluate_expressions(tree, filename="<config>"):
    """Replaces every ``${expr}`` string by ``eval(expr)`` over the merged tree (top-level keys are names)."""
    return _Evaluator(tree, filename).value(())


def load_config(path, overrides=None):
    """Loads a config file with its ``default.yaml`` chain, CLI overrides (a list of ``--a.b value`` tokens or of
    ``(key, value)`` pairs) and ``${}`` evaluation; returns an mmengine ``Config``."""
    tree = {}
    for file in config_chain(path):
        merge_into(tree, {k: v for k, v in _read(file).items() if k != "_base_"})
    deferred = []
    if overrides:
        pairs = split_cli_overrides(overrides) if isinstance(overrides[0], str) else list(overrides)
        deferred = apply_overrides(tree, pairs, defer_expressions=True)
    # A key at its merged path inside a ${} subtree is set in the evaluated tree, where it exists; _plain first
    # gives every path its own dict (evaluation shares one between a subtree and the key it came from).
    tree = _plain(evaluate_expressions(tree, filename=path))
    apply_overrides(tree, deferred)
    return Config(tree, filename=os.path.abspath(path))
