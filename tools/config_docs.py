"""Writes docs/config.md from the pydantic models, so the reference cannot drift from the code.

python -m tools.config_docs > docs/config.md     (a test checks the file is current)
"""

from __future__ import annotations

import functools
import operator
import re
import types
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from edge_agent.config import ENV_MQTT_PASSWORD, ENV_MQTT_USERNAME, AgentConfig
from edge_agent.config.loader import MAX_CONFIG_BYTES
from edge_agent.config.yamltree import MAX_DEPTH, MAX_VALUES
from edge_agent.pipeline.stages import stage_types

INTRO = f"""# Agent configuration reference

`edge-agent run --config FILE` reads a YAML file with the keys below. Unknown keys are errors;
`edge-agent check-config FILE` lists every problem with its YAML path and line number (exit 2)
or prints a summary (exit 0). Relative paths (bundle, video files, image folders, TLS files) are
relative to the config file. `${ENV_MQTT_USERNAME}` and `${ENV_MQTT_PASSWORD}` override the
broker login so secrets can stay out of the file.

This page is generated from the `edge_agent/config/` models by `python -m tools.config_docs`.

```yaml
device_id: shelf-cam-1          # default: the host name
model:
  bundle: /var/lib/edgesight/models/current
  runtime: onnx
  threads: 2
sources:
  - id: aisle3
    uri: rtsp://192.0.2.10/stream1
    fps_limit: 5
  - id: backroom
    uri: /srv/captures/          # a folder of images, processed in name order
    on_eof: stop
mqtt:
  host: broker.local
  port: 8883
  username: agent                # password from ${ENV_MQTT_PASSWORD}
  tls:
    ca_file: ca.crt
```

## What is refused

Nothing in a config is silently fixed up or ignored; each of these is an error at its line:

- **YAML that could hurt a small device**: a recursive alias (`a: &x [*x]`), more than
  {MAX_VALUES:,} values once aliases are expanded (an "alias bomb"), nesting deeper than
  {MAX_DEPTH} levels, a file over {MAX_CONFIG_BYTES // 1024} KiB, bytes that are not UTF-8,
  tags other than YAML's own (`!!python/...`). Anchors and `<<: *defaults` merges are fine:
  keys written next to `<<` win over merged ones.
- **Duplicate keys**: the message names both lines (YAML parsers usually keep the last one).
- **A value of the wrong type**: `port: true`, `threads: yes`, `threads: 2.0`,
  `fps_limit: "5"` (quoted), `uri: true`. Numbers must be finite (no `.nan`, `.inf`) and within
  the range each field gives below.
- **A URL with no host** (`rtsp://`, `http:///stream`, `rtsp://:554/x`) or a bad port. Camera
  indexes (`0`) and `/dev/video0` are cameras, not paths.
- **An id that is not one MQTT topic level as written**: the message names the character at
  fault (a space, `/`, `+`, `#`, a non-ASCII letter); ids are never rewritten. The default
  `device_id`, the host name, is checked by the same rule.
- **A broker host that is a URL** (`mqtt://broker`): the port and TLS have their own keys.
- **Files that are missing or cannot be read** (`check-config` only): the bundle, the video file
  or image folder of a file or folder source, the TLS files. Public key files are read whenever
  the config is loaded.
"""


STAGES_INTRO = """# Stage types

Each source's `stages` list runs in order on every result after the model, before it is
published. An entry is `type:` plus that stage's own options below (unknown keys are errors).
"""


def _plain(annotation: typing.Any) -> typing.Any:
    """The annotation without ``Annotated[...]`` metadata (validators), also inside a union."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _plain(args[0])
    if origin is typing.Union or origin is types.UnionType:
        return functools.reduce(operator.or_, [_plain(arg) for arg in args])
    return annotation


def _type_name(annotation: object) -> str:
    annotation = _plain(annotation)
    text = str(annotation).replace("typing.", "").replace("pathlib.", "")
    if isinstance(annotation, type):
        text = annotation.__name__
    text = re.sub(r"edge_agent\.[a-z_.]*\.", "", text).replace("NoneType", "null")
    return text.replace("Literal", "one of ").replace(" | ", " or ")


def _default(field: typing.Any) -> str:
    if field.default_factory is not None:
        is_section = isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        return "see below" if is_section else "computed"
    if field.default is PydanticUndefined:
        return "**required**"
    return f"`{field.default!r}`" if field.default is not None else "`null`"


def _section(title: str, model: type[BaseModel], nested: list[tuple[str, type[BaseModel]]]) -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        inner = [a for a in typing.get_args(field.annotation) if isinstance(a, type)]
        candidates = [field.annotation, *inner]
        for cand in candidates:
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                nested.append((f"{title}.{name}" if title else name, cand))
        rows.append(
            f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | "
            f"{field.description or ''} |"
        )
    return f"## `{title or 'top level'}`\n\n" + "\n".join(rows) + "\n"


def render() -> str:
    parts = [INTRO]
    queue: list[tuple[str, type[BaseModel]]] = [("", AgentConfig)]
    while queue:
        title, model = queue.pop(0)
        found: list[tuple[str, type[BaseModel]]] = []
        parts.append(_section(title, model, found))
        queue.extend(found)
    parts.append(STAGES_INTRO)
    for name, stage in sorted(stage_types().items()):
        doc = (stage.options.__doc__ or "").strip()
        if not stage.options.model_fields:
            parts.append(f"## `stages: type {name}`\n\n{doc} No options.\n")
            continue
        # A stage's list items (zones, lines, slots) are models of their own: each its table.
        stage_queue: list[tuple[str, type[BaseModel]]] = [(f"stages: type {name}", stage.options)]
        while stage_queue:
            title, model = stage_queue.pop(0)
            found = []
            parts.append(_section(title, model, found))
            stage_queue.extend((f"{t}[]" if t.count(".") else t, m) for t, m in found)
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
