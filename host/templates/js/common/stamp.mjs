// Writes package.json's name, version, author and repository into
// connector.wasm's metadata sections, which `nuntiq-host inspect` shows and
// every run records (`npm run build` calls it after jco).
import { readFileSync, writeFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('./package.json', import.meta.url)));
const path = new URL('./connector.wasm', import.meta.url);
const wasm = readFileSync(path);
const leb = (n) => { const out = []; do { let b = n & 0x7f; n >>>= 7; if (n) b |= 0x80; out.push(b); } while (n); return Buffer.from(out); };
const readLeb = (at) => { let n = 0, shift = 0, b; do { b = wasm[at++]; n |= (b & 0x7f) << shift; shift += 7; } while (b & 0x80); return [n >>> 0, at]; };
const present = new Set();
for (let at = 8; at < wasm.length;) {
  const id = wasm[at];
  const [size, start] = readLeb(at + 1);
  if (id === 0) { const [len, nameAt] = readLeb(start); present.add(wasm.subarray(nameAt, nameAt + len).toString()); }
  at = start + size;
}
const str = (s) => Buffer.concat([leb(Buffer.byteLength(s)), Buffer.from(s)]);
const name = str(pkg.name);
const wanted = {
  'component-name': Buffer.concat([Buffer.from([0]), leb(name.length), name]),
  version: Buffer.from(pkg.version || ''),
  authors: Buffer.from(pkg.author || ''),
  source: Buffer.from(pkg.repository || ''),
};
const sections = [wasm];
for (const [section, payload] of Object.entries(wanted)) {
  // A toolchain's own component-name section may name only the parts: ours names the component.
  if (!payload.length || (present.has(section) && section !== 'component-name')) continue;
  const body = Buffer.concat([str(section), payload]);
  sections.push(Buffer.from([0]), leb(body.length), body);
}
writeFileSync(path, Buffer.concat(sections));
console.log(`built connector.wasm: ${pkg.name} ${pkg.version}`);
