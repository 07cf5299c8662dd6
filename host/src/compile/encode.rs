//! The component binary format by hand, for tests: small enough to write
//! out, and a test then says exactly what it builds. Used by the host's unit
//! tests and (by path) by `tests/e2e/compile.rs`, so there is one encoder.

pub const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";
pub const MODULE: &[u8] = b"\0asm\x01\0\0\0";

pub fn leb(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

pub fn section(id: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![id];
    out.extend(leb(content.len()));
    out.extend_from_slice(content);
    out
}

/// A component of these sections.
pub fn component(sections: &[Vec<u8>]) -> Vec<u8> {
    let mut out = COMPONENT.to_vec();
    for s in sections {
        out.extend_from_slice(s);
    }
    out
}

/// `depth` empty components, each inside the one before: issue #16's bomb,
/// whose compile memory grows with the square of the depth. Written from the
/// outside in, so 100 000 levels take one pass.
pub fn nested(depth: usize) -> Vec<u8> {
    let mut sizes = vec![COMPONENT.len()];
    for _ in 1..depth {
        let inner = sizes[sizes.len() - 1];
        sizes.push(COMPONENT.len() + 1 + leb(inner).len() + inner);
    }
    let mut out = Vec::with_capacity(sizes[sizes.len() - 1]);
    for inner in sizes.iter().rev().skip(1) {
        out.extend_from_slice(COMPONENT);
        out.push(4);
        out.extend(leb(*inner));
    }
    out.extend_from_slice(COMPONENT);
    out
}

/// A component instance section instantiating component 0 `times` times.
pub fn instantiate_first(times: u8) -> Vec<u8> {
    let mut content = vec![times];
    for _ in 0..times {
        content.extend([0, 0, 0]);
    }
    section(5, &content)
}

/// A core instance section instantiating module 0 once.
pub fn instantiate_module() -> Vec<u8> {
    section(2, &[1, 0, 0, 0])
}
