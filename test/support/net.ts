/** Network helpers for tests that start servers. */
import * as net from 'node:net';

/** A port nothing listens on right now on 127.0.0.1 (for an endpoint another party must know in advance). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}
