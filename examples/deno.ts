// Deno, with no permissions at all: the host hands the engine its wasm bytes (here on stdin), so
// the package reads no file, and the images live in memory.
//   From a checkout (npm ci done):      deno run --no-lock --cached-only examples/deno.ts < build/cowchain.wasm
//   From the packed tarball:            npm pack && (in your project) npm install ./cowchain-<version>.tgz, then
//                                       deno run --no-lock --cached-only deno.ts < node_modules/cowchain/build/cowchain.wasm
// Deno resolves `cowchain` through package.json and node_modules (nothing is fetched: --cached-only).
// With files, give Deno what the files need: --allow-read --allow-write on the volume directory.
import { MemoryBackend, createQcow2On, openImageOn, setEngineSource } from 'cowchain';

declare const Deno: { stdin: { readable: ReadableStream<Uint8Array> } };

setEngineSource(new Uint8Array(await new Response(Deno.stdin.readable).arrayBuffer()));

const store = new MemoryBackend();
createQcow2On(store, { size: 8 << 20 });
const img = openImageOn(store, { writable: true });
img.write(3 << 20, new TextEncoder().encode('written under Deno'));
const text = new TextDecoder().decode(img.read(3 << 20, 18));
img.close();
if (text !== 'written under Deno') throw new Error(`read back ${JSON.stringify(text)}`);
console.log(`deno: ${text}; qcow2 image of ${store.size()} bytes in memory`);
