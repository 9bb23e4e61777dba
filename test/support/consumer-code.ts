// Code written for users (the README's blocks, examples/) run as a user runs it: TypeScript that
// imports `cowchain`, `cowchain/nova`, … by package name, in a scratch project whose
// node_modules/cowchain links to this checkout (so the names resolve through package.json's
// exports to the built dist/). Type-checked with tsc under strict settings, then each module
// transpiled to plain ESM and run by Node in its own process.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import ts from 'typescript';
import { ROOT } from './bundle.js';
import { runProcess, type ProcessResult } from './child.js';

export interface ConsumerProject {
  dir: string;
  /** Remove the scratch project. */
  remove(): void;
}

/**
 * A scratch project that resolves `cowchain` to this checkout; `dependencies`: packages of this
 * checkout's node_modules the code imports too (as a user's project would install them).
 */
export function consumerProject(prefix: string, dependencies: string[] = []): ConsumerProject {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'cowchain'), 'dir');
  for (const dep of dependencies) fs.symlinkSync(path.join(ROOT, 'node_modules', dep), path.join(dir, 'node_modules', dep), 'dir');
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** tsc --noEmit over `files` (relative to the project), strict NodeNext; the output on failure. */
export async function typecheck(project: ConsumerProject, files: string[]): Promise<ProcessResult> {
  const compilerOptions = {
    target: 'ES2022',
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    lib: ['ES2022', 'DOM', 'ESNext.Disposable'],
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    typeRoots: [path.join(ROOT, 'node_modules/@types')],
    types: ['node'],
  };
  fs.writeFileSync(path.join(project.dir, 'tsconfig.json'), JSON.stringify({ compilerOptions, files }, null, 2));
  return runProcess(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: project.dir, timeoutMs: 600_000 });
}

/** Transpile `file` (TypeScript, relative to the project) to `<file>.mjs`; its path. */
export function transpile(project: ConsumerProject, file: string): string {
  const source = fs.readFileSync(path.join(project.dir, file), 'utf8');
  const js = ts.transpileModule(source, { compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext }, fileName: file }).outputText;
  const out = path.join(project.dir, file.replace(/\.ts$/, '.mjs'));
  fs.writeFileSync(out, js);
  return out;
}

/** Transpile `file` and run it with Node to its end. */
export async function runTs(project: ConsumerProject, file: string, options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<ProcessResult> {
  const out = transpile(project, file);
  return runProcess(process.execPath, [out], { cwd: project.dir, env: { ...process.env, ...options.env }, timeoutMs: options.timeoutMs ?? 600_000 });
}

/** The run's output, for a failure message. */
export function explain(r: ProcessResult): string {
  return `exit ${r.status}${r.signal ? ` (signal ${r.signal})` : ''}${r.error ? ` (${r.error.message})` : ''}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}
