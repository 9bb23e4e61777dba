// SIGINT and SIGTERM during a volume command. While the command waits (for the lock, for Nova, on
// the file system) a signal interrupts its driver: it stops before its next change, releases the
// lock, and the command exits 130 (SIGINT) or 143 (SIGTERM). While an engine job runs in this
// thread nothing can answer a signal, so the default action is restored for that time: the
// process dies at once, as a crash does (the journal stays), and the next command takes the lock
// over without waiting, because its holder is gone (src/volume/lock-owner.ts).
import { CowError } from '../errors.js';
import type { JobHooks, JobRequest, JobRunner } from '../volume/job-request.js';
import type { JobOptions } from '../image/job.js';

const EXIT_CODES = { SIGINT: 130, SIGTERM: 143 } as const;
type HandledSignal = keyof typeof EXIT_CODES;

let received: HandledSignal | undefined;

/** 128 + the signal's number when a handled signal interrupted the command, else undefined. */
export function interruptExitCode(): number | undefined {
  return received === undefined ? undefined : EXIT_CODES[received];
}

export class Interruption {
  private readonly controller = new AbortController();
  /** Aborted (reason: an ECOW_CANCELLED naming the signal) on the first SIGINT or SIGTERM. */
  readonly signal: AbortSignal = this.controller.signal;
  private attached = false;

  constructor() {
    received = undefined;
  }

  private readonly onSignal = (sig: HandledSignal) => {
    if (this.controller.signal.aborted) {
      // A second signal: the command did not stop; exit as the signal would (a crash, to the files).
      process.exit(EXIT_CODES[sig]);
    }
    received = sig;
    this.controller.abort(new CowError('ECOW_CANCELLED', `interrupted by ${sig}`));
  };

  /**
   * Engine jobs in this thread, with the signals' default action while they run: a request
   * (run), or a job on images the operation has open (here: a snapshot delete commits on the
   * chain it opened, not on a second opening of its files).
   */
  readonly jobs: JobRunner = {
    run: async (request: JobRequest, hooks?: JobHooks) => {
      // Loaded here, not at start: main.ts imports this module, and the job schemas need zod.
      const { runJobRequest } = await import('../volume/job-request.js');
      return this.jobs.here!(() => runJobRequest(request, hooks as JobOptions));
    },
    here: async <T>(job: () => T): Promise<T> => {
      // A signal caught just before is delivered first: the job then never starts.
      await new Promise((resolve) => setImmediate(resolve));
      if (this.signal.aborted) throw this.signal.reason;
      const was = this.attached;
      this.detach();
      try {
        return job();
      } finally {
        if (was) this.attach();
      }
    },
  };

  attach(): void {
    if (this.attached) return;
    this.attached = true;
    for (const sig of Object.keys(EXIT_CODES) as HandledSignal[]) process.on(sig, this.onSignal);
  }

  detach(): void {
    if (!this.attached) return;
    this.attached = false;
    for (const sig of Object.keys(EXIT_CODES) as HandledSignal[]) process.removeListener(sig, this.onSignal);
  }

  /** Run `fn` with the handlers attached. */
  async during<T>(fn: () => Promise<T>): Promise<T> {
    this.attach();
    try {
      return await fn();
    } finally {
      this.detach();
    }
  }
}
