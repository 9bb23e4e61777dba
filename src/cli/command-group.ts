// A command group (`img`, `volume`, `snapshot`) as a table of declarations, so that a run declares
// to commander only the commands it can reach: declaring all of them (some 150 options) costs more
// at start-up than a short command's own work.
import type { Command } from 'commander';

export interface CommandGroup {
  name: string;
  description: string;
  /** Each subcommand's declaration, by its name: adds it to the group's command. */
  commands: Record<string, (group: Command) => Command>;
}

/**
 * Which of `group`'s subcommands a run with these arguments can reach: all of them (no arguments
 * given, as for a test walking the tree; the group's help; a name commander must reject with its
 * suggestions), one (the run names it), or none (another group runs; the root's help lists this
 * group by its name and description only).
 */
export function reachable(group: CommandGroup, argv: readonly string[] | undefined): 'all' | 'none' | string {
  if (argv === undefined) return 'all';
  const [first, second] = argv[0] === 'help' ? argv.slice(1) : argv;
  if (first !== group.name) return 'none';
  return argv[0] !== 'help' && second !== undefined && Object.hasOwn(group.commands, second) ? second : 'all';
}

/** Add `group` to `program` with the subcommands a run with `argv` can reach. */
export function registerGroup(program: Command, group: CommandGroup, argv: readonly string[] | undefined): void {
  const cmd = program.command(group.name).description(group.description);
  const reach = reachable(group, argv);
  if (reach === 'none') return;
  for (const [name, declare] of Object.entries(group.commands)) if (reach === 'all' || reach === name) declare(cmd);
}
