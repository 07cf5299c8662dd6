"""Builds connector.wasm: componentize-py against the contract in wit/
(world connector-core; `nuntiq-host wit --out wit` writes it again), then
writes pyproject.toml's name, version, authors and source into the
component's metadata sections, which `nuntiq-host inspect` shows."""
import pathlib
import shutil
import subprocess
import sys
import tomllib

here = pathlib.Path(__file__).resolve().parent
out = here / "connector.wasm"
tool = shutil.which("componentize-py") or str(pathlib.Path(sys.executable).parent / "componentize-py")
subprocess.run([tool, "-d", "wit", "-w", "connector-core", "componentize", "app", "-p", "src", "-o", str(out)],
               cwd=here, check=True)


def leb(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def custom_sections(wasm):
    """Names of the component's own (top-level) custom sections."""
    names, at = set(), 8
    while at < len(wasm):
        section, at = wasm[at], at + 1
        size = shift = 0
        while True:
            byte, at = wasm[at], at + 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if section == 0:
            length = shift = 0
            inner = at
            while True:
                byte, inner = wasm[inner], inner + 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            names.add(wasm[inner:inner + length].decode("utf-8", "replace"))
        at += size
    return names


project = tomllib.loads((here / "pyproject.toml").read_text())["project"]
wanted = {
    "component-name": b"\x00" + leb(len(leb(len(project["name"])) + project["name"].encode()))
    + leb(len(project["name"])) + project["name"].encode(),
    "version": project["version"].encode(),
    "authors": ", ".join(a.get("name", "") for a in project.get("authors", [])).encode(),
    "source": project.get("urls", {}).get("source", "").encode(),
}
wasm = bytearray(out.read_bytes())
present = custom_sections(wasm)
for name, payload in wanted.items():
    # A toolchain's own component-name section may carry no name (only its
    # subsections for the parts): one naming the component goes after it.
    if payload and (name not in present or name == "component-name"):
        body = leb(len(name)) + name.encode() + payload
        wasm += b"\x00" + leb(len(body)) + body
out.write_bytes(wasm)
print(f"built {out.name}: {project['name']} {project['version']}")
