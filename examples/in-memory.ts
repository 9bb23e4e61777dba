// The engine with no file system: images on MemoryBackend (any storage works the same way:
// implement Backend — read, write, size, truncate, flush, close). Here a qcow2 base and an
// overlay above it, both in memory: the overlay takes the writes, the base stays as it was.
// A host without file access passes the engine itself: setEngineSource(wasmBytes) (examples/deno.ts).
import assert from 'node:assert/strict';
import { MemoryBackend, createQcow2On, openImageOn, qemuStyleInfo } from 'cowchain';

const MiB = 1 << 20;
const baseStore = new MemoryBackend();
const topStore = new MemoryBackend();

// The base: 16 MiB, one write, closed (flushed into its backend).
createQcow2On(baseStore, { size: 16 * MiB, clusterSize: 64 * 1024 });
const base = openImageOn(baseStore, { name: 'base', writable: true });
base.write(0, new Uint8Array(MiB).fill(0x11));
base.close();

// The overlay names its backing file; with openImageOn the caller links the chain itself.
createQcow2On(topStore, { size: 16 * MiB, backingFile: 'base', backingFormat: 'qcow2' });
const below = openImageOn(baseStore, { name: 'base', format: 'qcow2' });
const top = openImageOn(topStore, { name: 'top', format: 'qcow2', writable: true, backing: below });
top.write(512 * 1024, new Uint8Array(4096).fill(0x22));

assert.equal(top.read(0, 1)[0], 0x11); // from the base
assert.equal(top.read(512 * 1024, 1)[0], 0x22); // from the overlay
console.log(top.map().map((e) => `${e.start}+${e.length}: ${e.data ? `data at depth ${e.depth}` : 'zeros'}`).join('\n'));
console.log(JSON.stringify(qemuStyleInfo(top)));
top.close(); // closes the chain below it too

// The base's bytes are untouched: read it alone.
const again = openImageOn(baseStore, { name: 'base', format: 'qcow2' });
assert.equal(again.read(512 * 1024, 1)[0], 0x11);
again.close();
console.log(`in memory: done (base ${baseStore.size()} bytes, overlay ${topStore.size()} bytes)`);
