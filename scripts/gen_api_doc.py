#!/usr/bin/env python3
"""Writes docs/api.md from Omega's OpenAPI 3 document.

Usage:
    gen_api_doc.py openapi.json [-o docs/api.md]
    gen_api_doc.py --url http://127.0.0.1:8080/api/v1/openapi.json [-o docs/api.md]
    gen_api_doc.py openapi.json --check docs/api.md

Without -o the Markdown goes to standard output. With --check FILE nothing is
written: the exit status is 0 when FILE is exactly what would be generated,
1 (with a diff) when it is not.

The output is deterministic: tag sections in a fixed order (then the order in
which the document first uses other tags), operations in the order the
document lists them, schemas in the document's order. Only the standard
library is used.
"""

import argparse
import difflib
import http
import json
import re
import sys
import urllib.request

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# Section order for the tags Omega uses; any other tag follows, in the order
# the document first uses it.
TAG_ORDER = ("setup", "auth", "users", "libraries", "items", "playback", "jobs", "events", "admin")

# Tags that mark an operation's access rules rather than name a section (an
# operation is filed under its first tag that is not a marker).
MARKER_TAGS = ("library-scoped",)

TAG_BLURBS = {
    "setup": "First-run set-up: creating the first administrator on a node with no users.",
    "auth": "Signing in, tokens, API keys, app passwords and the TOTP second factor.",
    "users": "Managing accounts and which libraries they may see (administrators).",
    "libraries": "Libraries, their folders and scans.",
    "items": "The catalog: listing, searching, images, direct streams, progress and favourites.",
    "playback": "Playback decisions and HLS.",
    "jobs": "Transcoding jobs run by any member of the cluster (administrators).",
    "events": "Live events over a WebSocket.",
    "admin": "Cluster and store status (administrators).",
}

PREAMBLE = """\
Every route lives under `/api/v1`, takes and returns JSON (unless noted:
streams, images, playlists) and is the same on every member of a cluster.
The machine-readable form of this page is served, without authentication,
at `GET /api/v1/openapi.json`.

## Authentication

1. **Sign in** with `POST /api/v1/auth/login` and a body
   `{"username": "...", "password": "..."}`; add `"totp": "123456"` when the
   account has enrolled a TOTP second factor. Repeated failures are answered
   with `429` and a `Retry-After` header. The answer carries an
   `access_token` (valid 15 minutes, `expires_in` seconds), a
   `refresh_token` (valid 30 days) and the user.
2. **Call the API** with `Authorization: Bearer <access_token>`. Long-lived
   API keys (`POST /api/v1/auth/keys`, for scripts and apps) are sent the
   same way or in an `X-Api-Key: <key>` header.
3. **Refresh** before the access token expires: `POST /api/v1/auth/refresh`
   with `{"refresh_token": "..."}` returns a new pair and revokes the old
   refresh token (rotation: a refresh token works once).
   `POST /api/v1/auth/logout` revokes one.

Tokens issued by one member are accepted by every member of the cluster.

Each operation below says what it needs:

- **anonymous**: no credentials;
- **token**: a signed-in user (access token or API key), else `401`;
- **administrators**: an administrator's token, else `403` (operations
  tagged `admin`);
- **library access**: the item or library must be in one of the libraries
  the caller may see, else `404`, so that existence is not revealed
  (operations tagged `library-scoped`).

## Signed URLs for media elements

`<video>`, `<audio>` and `<img>` cannot send headers. Item views and playback
answers therefore carry URLs (`image`, `stream_url`, `hls_url`) with a signed,
item-scoped stream token in the query, `?t=...`: they work without an
`Authorization` header for that item only, for a few hours. Tokens in
listings expire on the hour, so their URLs (and the browser's cache) stay
stable within it. The events WebSocket takes an access token or API key as
`?token=` for the same reason.

## Errors

Errors are JSON, `{"error": "a sentence saying what went wrong"}`, with the
HTTP status saying which kind: `400` invalid input, `401` no or bad
credentials, `403` not allowed, `404` not found (or not visible to the
caller), `409` conflict (a name taken, a job not done), `429` too many
attempts, `503` busy (see `Retry-After`). Some errors add fields to that
object.

## Pagination

Listings that can be long (the operations below with `limit` and `offset`
parameters, such as `GET /api/v1/items`) take `limit` (page size; the
default and maximum are in each parameter's description) and `offset`
(items to skip) in the query, and answer with a page object: `items`,
`total` (matches in all), `offset` and `limit`. Page on until
`offset + limit >= total`.
"""


class Doc:
    """The OpenAPI document, with `$ref` resolution."""

    def __init__(self, spec):
        self.spec = spec
        self.schemas = spec.get("components", {}).get("schemas", {})

    def resolve(self, node):
        """Follows `$ref`s (any local JSON pointer) to the object they name."""
        seen = set()
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if ref in seen or not ref.startswith("#/"):
                break
            seen.add(ref)
            target = self.spec
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part, {}) if isinstance(target, dict) else {}
            node = target
        return node


def reason(status):
    """The standard reason phrase of a status code, for responses the
    document leaves undescribed."""
    try:
        return http.HTTPStatus(int(status)).phrase
    except ValueError:
        return "Any other status" if status == "default" else ""


def ref_name(ref):
    return ref.rsplit("/", 1)[-1]


def schema_anchor(name):
    return "schema-" + re.sub(r"[^a-z0-9-]", "-", name.lower())


def schema_link(name):
    return "[`%s`](#%s)" % (name, schema_anchor(name))


def one_line(text):
    """A description on one line, safe inside a table cell."""
    text = " ".join((text or "").split())
    return text.replace("|", "\\|")


def paragraph(text):
    """A multi-line description as Markdown paragraphs (lines joined)."""
    parts = re.split(r"\n\s*\n", (text or "").strip())
    return "\n\n".join(" ".join(part.split()) for part in parts if part.strip())


def type_of(schema):
    """A short, readable type for a schema: `integer (int64)`, `string or null`,
    `array of ItemView`, a link for `$ref`s."""
    if not isinstance(schema, dict) or not schema:
        return "any"
    if "$ref" in schema:
        return schema_link(ref_name(schema["$ref"]))
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " or ".join(dict.fromkeys(type_of(option) for option in schema[key]))
    if "allOf" in schema:
        return " and ".join(dict.fromkeys(type_of(option) for option in schema["allOf"]))
    kinds = schema.get("type")
    if kinds is None:
        if "properties" in schema:
            kinds = "object"
        elif "enum" in schema:
            kinds = "string"
        else:
            return "any"
    if not isinstance(kinds, list):
        kinds = [kinds]
    names = []
    for kind in kinds:
        if kind == "array":
            names.append("array of %s" % type_of(schema.get("items", {})))
        elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
            names.append("map of %s" % type_of(schema["additionalProperties"]))
        elif kind in ("integer", "number", "string") and schema.get("format"):
            names.append("%s (%s)" % (kind, schema["format"]))
        else:
            names.append(kind)
    text = " or ".join(names)
    if "enum" in schema:
        text += ", one of " + ", ".join("`%s`" % json.dumps(value).strip('"') for value in schema["enum"])
    return text


def description_of(schema, doc):
    """A property's own description, else the one of the schema it refers to."""
    if not isinstance(schema, dict):
        return ""
    if schema.get("description"):
        return schema["description"]
    for key in ("oneOf", "anyOf", "allOf"):
        for option in schema.get(key, []):
            if isinstance(option, dict) and option.get("description"):
                return option["description"]
    resolved = doc.resolve(schema)
    if resolved is not schema and isinstance(resolved, dict):
        return resolved.get("description", "")
    return ""


def field_table(schema, doc):
    """Lines of a table of an object schema's fields, or [] if it has none."""
    schema = doc.resolve(schema)
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not properties:
        return []
    required = set(schema.get("required", []))
    lines = ["| Field | Type | Required | Description |", "|---|---|---|---|"]
    for name, prop in properties.items():
        lines.append(
            "| `%s` | %s | %s | %s |"
            % (name, type_of(prop), "yes" if name in required else "no", one_line(description_of(prop, doc)))
        )
    return lines


def body_text(content):
    """What a request or response body is: its media types and schemas."""
    parts = []
    for media_type, media in content.items():
        schema = media.get("schema") if isinstance(media, dict) else None
        if schema:
            parts.append("`%s`: %s" % (media_type, type_of(schema)))
        else:
            parts.append("`%s`" % media_type)
    return "; ".join(parts)


def operations(spec):
    """(path, method, operation) in the document's order."""
    for path, item in spec.get("paths", {}).items():
        shared = item.get("parameters", [])
        for method, operation in item.items():
            if method in HTTP_METHODS and isinstance(operation, dict):
                yield path, method, operation, shared


def section_of(operation):
    tags = operation.get("tags") or ["other"]
    for tag in tags:
        if tag not in MARKER_TAGS:
            return tag
    return tags[0]


def access_of(operation, spec):
    security = operation.get("security", spec.get("security"))
    needs_token = bool(security) and any(bool(requirement) for requirement in security)
    tags = operation.get("tags") or []
    if not needs_token:
        return "anonymous"
    parts = ["token"]
    if "admin" in tags:
        parts.append("administrators")
    if "library-scoped" in tags:
        parts.append("library access")
    return ", ".join(parts)


def heading_slug(text):
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def operation_anchor(path, method):
    """An explicit anchor per operation (renderers differ in heading slugs)."""
    return "op-" + method.lower() + "-" + "-".join(re.findall(r"[a-z0-9.]+", path.lower())).replace(".", "-")


def render_operation(path, method, operation, shared, doc):
    lines = ['<a id="%s"></a>' % operation_anchor(path, method), "", "### `%s %s`" % (method.upper(), path), ""]
    summary = paragraph(operation.get("summary", ""))
    if summary:
        lines += [summary, ""]
    description = paragraph(operation.get("description", ""))
    if description and description != summary:
        lines += [description, ""]
    access = access_of(operation, doc.spec)
    note = "**Access:** %s." % access
    parameters = [doc.resolve(parameter) for parameter in shared + operation.get("parameters", [])]
    if access != "anonymous" and any(p.get("name") == "t" and p.get("in") == "query" for p in parameters):
        note += " A stream token in `?t=` may stand in for the token."
    if operation.get("deprecated"):
        note += " **Deprecated.**"
    lines += [note, ""]
    if parameters:
        lines += [
            "**Parameters**",
            "",
            "| Name | In | Type | Required | Description |",
            "|---|---|---|---|---|",
        ]
        for parameter in parameters:
            lines.append(
                "| `%s` | %s | %s | %s | %s |"
                % (
                    parameter.get("name", ""),
                    parameter.get("in", ""),
                    type_of(parameter.get("schema", {})),
                    "yes" if parameter.get("required") else "no",
                    one_line(parameter.get("description", "")),
                )
            )
        lines.append("")
    request = doc.resolve(operation.get("requestBody"))
    if isinstance(request, dict) and request:
        content = request.get("content", {})
        required = "required" if request.get("required") else "optional"
        lines += ["**Request body** (%s): %s" % (required, body_text(content) or "none"), ""]
        if request.get("description"):
            lines += [paragraph(request["description"]), ""]
        for media in content.values():
            schema = media.get("schema") if isinstance(media, dict) else None
            table = field_table(schema, doc) if schema else []
            if table:
                lines += table + [""]
            break
    responses = operation.get("responses", {})
    if responses:
        lines += ["**Responses**", "", "| Status | Description | Body |", "|---|---|---|"]
        for status, response in responses.items():
            response = doc.resolve(response)
            lines.append(
                "| %s | %s | %s |"
                % (status, one_line(response.get("description") or reason(status)), body_text(response.get("content", {})))
            )
        lines.append("")
    return lines


def render(spec):
    doc = Doc(spec)
    info = spec.get("info", {})
    sections = {}
    for path, method, operation, shared in operations(spec):
        sections.setdefault(section_of(operation), []).append((path, method, operation, shared))
    declared = [tag.get("name") for tag in spec.get("tags", []) if isinstance(tag, dict)]
    order = [tag for tag in declared if tag in sections]
    order += [tag for tag in TAG_ORDER if tag in sections and tag not in order]
    order += [tag for tag in sections if tag not in order]
    tag_descriptions = {
        tag.get("name"): tag.get("description", "") for tag in spec.get("tags", []) if isinstance(tag, dict)
    }

    lines = [
        "# %s" % info.get("title", "API"),
        "",
        "<!-- Generated by scripts/gen_api_doc.py from GET /api/v1/openapi.json;"
        " do not edit by hand. -->",
        "",
    ]
    if info.get("description"):
        lines += [paragraph(info["description"]), ""]
    lines += [PREAMBLE.rstrip("\n"), ""]

    lines += ["## Operations", ""]
    for tag in order:
        lines.append("- [%s](#%s) (%d)" % (tag, heading_slug(tag), len(sections[tag])))
    if doc.schemas:
        lines.append("- [Schemas](#schemas)")
    lines.append("")

    for tag in order:
        lines += ["## %s" % tag, ""]
        blurb = tag_descriptions.get(tag) or TAG_BLURBS.get(tag, "")
        if blurb:
            lines += [paragraph(blurb), ""]
        lines += ["| Operation | Summary | Access |", "|---|---|---|"]
        for path, method, operation, _shared in sections[tag]:
            title = "%s %s" % (method.upper(), path)
            summary = one_line(paragraph(operation.get("summary", "")).split("\n")[0])
            lines.append(
                "| [`%s`](#%s) | %s | %s |"
                % (title, operation_anchor(path, method), summary, access_of(operation, spec))
            )
        lines.append("")
        for path, method, operation, shared in sections[tag]:
            lines += render_operation(path, method, operation, shared, doc)

    if doc.schemas:
        lines += ["## Schemas", "", "The bodies named above, as `components/schemas` defines them.", ""]
        for name, schema in doc.schemas.items():
            lines += ['<a id="%s"></a>' % schema_anchor(name), "", "### %s" % name, ""]
            if isinstance(schema, dict) and schema.get("description"):
                lines += [paragraph(schema["description"]), ""]
            table = field_table(schema, doc)
            if table:
                lines += table + [""]
            else:
                lines += ["Type: %s" % type_of(schema), ""]

    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def load(args):
    if args.url:
        with urllib.request.urlopen(args.url, timeout=30) as response:
            return json.load(response)
    with open(args.source, encoding="utf-8") as file:
        return json.load(file)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Writes Markdown API documentation from an OpenAPI 3 document.")
    parser.add_argument("source", nargs="?", help="the OpenAPI JSON document (a file)")
    parser.add_argument("--url", help="fetch the document from this URL instead")
    parser.add_argument("-o", "--output", help="write here (default: standard output)")
    parser.add_argument(
        "--check", metavar="FILE", help="exit 1 (with a diff) if FILE differs from what would be generated"
    )
    args = parser.parse_args(argv)
    if bool(args.source) == bool(args.url):
        parser.error("give exactly one of a file or --url")
    markdown = render(load(args))
    if args.check:
        try:
            with open(args.check, encoding="utf-8", newline="") as file:
                current = file.read()
        except OSError as error:
            current = None
            print("%s: %s" % (args.check, error), file=sys.stderr)
        if current == markdown:
            print("%s is up to date" % args.check)
            return 0
        if current is not None:
            diff = list(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    markdown.splitlines(keepends=True),
                    fromfile=args.check,
                    tofile="generated",
                )
            )
            sys.stdout.writelines(diff[:200])
            if len(diff) > 200:
                print("... (%d more diff lines)" % (len(diff) - 200))
        print(
            "%s is out of date: regenerate it with\n"
            "  python3 scripts/gen_api_doc.py --url http://HOST:PORT/api/v1/openapi.json -o %s" % (args.check, args.check)
        )
        return 1
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="\n") as file:
            file.write(markdown)
    else:
        sys.stdout.write(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
