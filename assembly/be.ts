// Big-endian access to linear memory: qcow2 stores every field big-endian, wasm is little-endian.

// @ts-ignore: decorator
@inline export function getU64(p: usize): u64 { return bswap<u64>(load<u64>(p)); }
// @ts-ignore: decorator
@inline export function getU32(p: usize): u32 { return bswap<u32>(load<u32>(p)); }
// @ts-ignore: decorator
@inline export function getU16(p: usize): u16 { return bswap<u16>(load<u16>(p)); }
// @ts-ignore: decorator
@inline export function getU8(p: usize): u8 { return load<u8>(p); }
// @ts-ignore: decorator
@inline export function putU64(p: usize, v: u64): void { store<u64>(p, bswap<u64>(v)); }
// @ts-ignore: decorator
@inline export function putU32(p: usize, v: u32): void { store<u32>(p, bswap<u32>(v)); }
// @ts-ignore: decorator
@inline export function putU16(p: usize, v: u16): void { store<u16>(p, bswap<u16>(v)); }
// @ts-ignore: decorator
@inline export function putU8(p: usize, v: u8): void { store<u8>(p, v); }
