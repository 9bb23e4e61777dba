// Where the CLI's output goes: process.stdout and process.stderr, or, in the bin's own process,
// straight to file descriptors 1 and 2. Making process.stdout costs a short command more than its
// own output (the stream modules, and on a pipe a socket: some 14M instructions at start-up);
// a synchronous write(2) does what the stream does on Linux, where writes to files, pipes and
// terminals are synchronous too. main() called in a process of its own (a test, a host program)
// writes to the streams, so that what replaces or watches them sees the output.
import * as fs from 'node:fs';

let descriptors = false;
/** Per descriptor: an error (EAGAIN on a non-blocking pipe, EPIPE) sent the rest to the stream. */
const toStream = new Set<number>();

/** Write through fds 1 and 2 from now on: the bin calls this before main(). */
export function writeToDescriptors(): void {
  descriptors = true;
}

export function writeStdout(text: string): void {
  write(1, text);
}

export function writeStderr(text: string): void {
  write(2, text);
}

function write(fd: 1 | 2, text: string): void {
  // process.stdout / process.stderr are made when first read: only on this path
  const stream = () => (fd === 1 ? process.stdout : process.stderr);
  if (!descriptors || toStream.has(fd)) {
    stream().write(text);
    return;
  }
  const bytes = Buffer.from(text, 'utf8');
  let done = 0;
  try {
    while (done < bytes.length) done += fs.writeSync(fd, bytes, done);
  } catch {
    // what the descriptor refused, and everything after it, goes through the stream, which
    // waits for a full pipe and reports a closed one as before
    toStream.add(fd);
    stream().write(bytes.subarray(done));
  }
}
