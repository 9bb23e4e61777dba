// Every command of the built CLI (dist/cli/main.js, what the `cowchain` bin runs) documents itself:
// each command registered in the program — found by walking commander's tree, so a command added
// later is covered without touching this file — has a description, each of its options has one,
// and both `cowchain … --help` and the group's help command (`cowchain help img`,
// `cowchain img help info`) exit 0 with that command's usage on stdout and nothing on stderr.
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import type { Command } from 'commander';
import { beforeAll, describe, expect, it, vi } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(ROOT, 'dist/cli/main.js');
const run = promisify(execFile);

interface Node {
  path: string[];
  command: Command;
}

interface BuiltCli {
  main: (argv: string[]) => Promise<number>;
  buildProgram: () => Command;
}

/** The built bin's module (a bundle: its commander is its own copy, so only its exports are used). */
async function builtCli(): Promise<BuiltCli> {
  return (await import(pathToFileURL(CLI).href)) as BuiltCli;
}

/** The program the built CLI runs, walked command by command. */
async function programTree(): Promise<Node[]> {
  const root = (await builtCli()).buildProgram();
  const nodes: Node[] = [];
  const walk = (command: Command, at: string[]) => {
    nodes.push({ path: at, command });
    for (const sub of command.commands) walk(sub, [...at, sub.name()]);
  };
  walk(root, []);
  return nodes;
}

/** The built CLI as its own process, as the `cowchain` bin runs. */
async function cliProcess(args: string[]): Promise<CliRun> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number | string; stdout?: string; stderr?: string };
    return { code: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout ?? '', stderr: err.stderr ?? String(e) };
  }
}

/**
 * The built CLI's main() in this process, output captured: the same program as the bin, without
 * starting a node process per command (dozens of them load a busy machine for many seconds).
 */
async function cli(args: string[]): Promise<CliRun> {
  const { main } = await builtCli();
  let stdout = '';
  let stderr = '';
  const out = vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => ((stdout += String(c)), true));
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => ((stderr += String(c)), true));
  try {
    const code = await main(args);
    return { code, stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
    process.exitCode = undefined;
  }
}

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Help text wraps long descriptions: compare with whitespace collapsed. */
const flat = (s: string) => s.replace(/\s+/g, ' ').trim();

describe('cowchain CLI help', () => {
  let nodes: Node[];
  beforeAll(async () => {
    nodes = await programTree();
  });

  it('registers the img group, its subcommands and io', () => {
    const paths = nodes.map((n) => n.path.join(' '));
    for (const p of ['', 'img', 'img info', 'img map', 'img convert', 'img check', 'img create', 'img commit', 'img rebase', 'img stream', 'io']) {
      expect(paths).toContain(p);
    }
  });

  it('every command and every option has a description', () => {
    const missing: string[] = [];
    for (const { path: p, command } of nodes) {
      const name = ['cowchain', ...p].join(' ');
      if (!command.description().trim()) missing.push(`${name}: command`);
      for (const option of command.options) if (!option.description?.trim()) missing.push(`${name}: option ${option.flags}`);
    }
    expect(missing, 'commands/options without a description').toEqual([]);
  });

  it('`cowchain … --help` and `cowchain [group] help CMD` exit 0 with the usage and the description', async () => {
    const failures: string[] = [];
    // In process for every command; as a process of the bin for the root, a group and a command.
    const asProcess = new Set(['--help', 'img --help', 'help img', 'img help info']);
    // One after another: the in-process runs share this process's stdout.
    for (const { path: p, command } of nodes) {
      const forms = [[...p, '--help']];
      // commander's help command of the parent group: `cowchain help img`, `cowchain img help info`
      if (p.length > 0) forms.push([...p.slice(0, -1), 'help', p[p.length - 1]]);
      for (const args of forms) {
        const r = asProcess.has(args.join(' ')) ? await cliProcess(args) : await cli(args);
        const usage = `Usage: ${['cowchain', ...p].join(' ')} `;
        const problems = [
          r.code !== 0 && `exit ${r.code}`,
          r.stderr !== '' && `stderr: ${r.stderr.trim()}`,
          !r.stdout.startsWith(usage) && `stdout does not start with "${usage}"`,
          !flat(r.stdout).includes(flat(command.description())) && 'description not shown',
          !r.stdout.includes('-h, --help') && 'no -h, --help line',
        ].filter(Boolean);
        if (problems.length) failures.push(`cowchain ${args.join(' ')}: ${problems.join('; ')}\n${r.stdout}`);
      }
    }
    for (const f of asProcess) expect(nodes.some(({ path: p }) => [[...p, '--help'], [...p.slice(0, -1), 'help', p[p.length - 1]]].some((a) => a.join(' ') === f)), f).toBe(true);
    expect(failures).toEqual([]);
  });

  it('a group lists each of its subcommands with its description', async () => {
    for (const { path: p, command } of nodes.filter((n) => n.command.commands.length > 0)) {
      const r = await cli([...p, '--help']);
      expect(r.code).toBe(0);
      for (const sub of command.commands) {
        expect(r.stdout, `cowchain ${p.join(' ')} --help does not list ${sub.name()}`).toMatch(new RegExp(`^  ${sub.name()}\\b`, 'm'));
        expect(flat(r.stdout)).toContain(flat(sub.description()));
      }
    }
  });
});
