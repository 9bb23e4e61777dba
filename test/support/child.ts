/**
 * A test's child process: a bundled entry (test/support/bundle.ts) run by plain node, its output
 * collected, resolved however it ends (exit code or signal) — the test judges that.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { ROOT } from './bundle.js';

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ChildOptions {
  env: Record<string, string>;
  /** Wrap the run (e.g. ['strace', '-f', …]): the command and its arguments before node. */
  wrapper?: string[];
  /** Called with each stdout chunk and the process (to kill it at a chosen moment). */
  onStdout?: (all: string, proc: ChildProcess) => void;
  /** The same for stderr. */
  onStderr?: (all: string, proc: ChildProcess) => void;
  timeoutMs?: number;
}

/** Run a bundled child with node; resolves when it exits (any way). */
export function runChild(bundle: string, options: ChildOptions): Promise<ChildResult> {
  const [cmd, ...pre] = options.wrapper ?? [];
  const argv = cmd ? [...pre, process.execPath, bundle] : [bundle];
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd ?? process.execPath, argv, {
      cwd: ROOT,
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    const timer = options.timeoutMs
      ? setTimeout(() => {
          stderr += `\n[killed by the test after ${options.timeoutMs} ms]`;
          proc.kill('SIGKILL');
        }, options.timeoutMs)
      : undefined;
    proc.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      options.onStdout?.(stdout, proc);
    });
    proc.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      options.onStderr?.(stderr, proc);
    });
    proc.on('error', reject);
    // 'close', not 'exit': only then has all of the child's output been read (a child that
    // prints its last line and exits can beat its pipe on a loaded machine).
    proc.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export interface ProcessResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  error?: Error;
}

/**
 * Run any command to its end without holding this process's event loop (spawnSync would: a
 * long one — npm install, tsc, deno — keeps the test process from answering vitest's runner).
 * `timeoutMs` kills it (SIGKILL); it is a guard against hangs, so keep it generous. `uid`/`gid`:
 * run it as that user (the test process must be root). `stdinFile`: its standard input.
 */
export function runProcess(cmd: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; uid?: number; gid?: number; stdinFile?: string } = {}): Promise<ProcessResult> {
  return new Promise((resolve) => {
    const stdin = options.stdinFile ? fs.openSync(options.stdinFile, 'r') : 'ignore';
    const proc = spawn(cmd, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: [stdin, 'pipe', 'pipe'], uid: options.uid, gid: options.gid });
    if (typeof stdin === 'number') fs.closeSync(stdin); // the child has its own copy
    let stdout = '';
    let stderr = '';
    const timer = options.timeoutMs ? setTimeout(() => proc.kill('SIGKILL'), options.timeoutMs) : undefined;
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    proc.on('error', (error) => {
      clearTimeout(timer);
      resolve({ status: null, signal: null, stdout, stderr, error });
    });
    proc.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}
