#!/usr/bin/env python3
"""Generate a layered ferry deployment of local.file resources (used by noop-apply.sh).

usage: gen-deployment.py OUT_DIR [LAYERS] [WIDTH]

Writes OUT_DIR/deployment.nix: LAYERS layers of WIDTH `local.file` resources (default 5 x 200
= 1,000), the files themselves under OUT_DIR/files/. Every resource in layer k > 0 puts the
sha256 of one or two resources of layer k-1 into its content, so the dependency depth is
LAYERS. Also writes OUT_DIR/bare.nix: the same resources as a plain Nix expression whose
`resources` argument is an attribute set literal of recorded outputs (read from
OUT_DIR/outputs.json, which noop-apply.sh produces from `ferry state export`), evaluating
every resource's inputs with builtins.toJSON -- the irreducible cost of one evaluation.
"""
import os
import sys


def name(layer, i):
    return f"r{layer}_{i:04d}"


def resource_body(out_dir, layer, i, width):
    path = os.path.join(out_dir, "files", f"{name(layer, i)}.txt")
    if layer == 0:
        content = f'"layer 0 item {i}\\n"'
    else:
        a = name(layer - 1, i)
        refs = f"${{resources.{a}.sha256}}"
        if i % 2 == 1:  # every other resource depends on two predecessors
            b = name(layer - 1, (i * 7 + 3) % width)
            refs += f" ${{resources.{b}.sha256}}"
        content = f'"layer {layer} item {i} from {refs}\\n"'
    return f'type = "local.file"; inputs = {{ path = "{path}"; content = {content}; }};'


def main():
    out_dir = os.path.abspath(sys.argv[1])
    layers = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    width = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    os.makedirs(os.path.join(out_dir, "files"), exist_ok=True)
    lines = []
    for layer in range(layers):
        for i in range(width):
            lines.append(f"    {name(layer, i)} = {{ {resource_body(out_dir, layer, i, width)} }};")
    body = "\n".join(lines)
    with open(os.path.join(out_dir, "deployment.nix"), "w") as f:
        f.write("{ resources, ... }:\n{\n  resources = {\n" + body + "\n  };\n}\n")
    # The bare equivalent: `resources` is a literal of recorded outputs, no fixpoint, no
    # tryEval, no placeholders; just every resource's inputs serialised to JSON.
    with open(os.path.join(out_dir, "bare.nix"), "w") as f:
        f.write(
            "let\n"
            "  resources = builtins.fromJSON (builtins.readFile ./outputs.json);\n"
            "  decls = {\n" + body + "\n  };\n"
            "in builtins.mapAttrs (name: d: builtins.toJSON d.inputs) decls\n"
        )


if __name__ == "__main__":
    main()
