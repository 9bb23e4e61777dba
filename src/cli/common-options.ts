// Options several commands declare alike, and qemu-img's options that cowchain does not have:
// those are refused in one line that names the option, instead of commander's "unknown option".
import { CommanderError, Option, type Command } from 'commander';

/** `--output human|json`: anything else is a usage error (exit 2), as with qemu-img. */
export function outputOption(): Option {
  return new Option('--output <fmt>', 'human or json').choices(['human', 'json']).default('human');
}

export const FORCE_SHARE = 'read even while another process (qemu) writes the image, as qemu-img -U';

/**
 * Declare qemu-img's options that `cmd` does not support, hidden from the help: given, each is a
 * usage error (ECOW_USAGE, exit 2) naming it and why (`flags` as commander spells them, e.g.
 * `-t <cache>` or `--image-opts`).
 */
export function refuseQemuOptions(cmd: Command, refused: Record<string, string>): Command {
  for (const [flags, why] of Object.entries(refused)) {
    const option = new Option(flags, why).hideHelp();
    cmd.addOption(option);
    cmd.on(`option:${option.name()}`, () => {
      throw new CommanderError(1, 'cowchain.unsupportedOption', `qemu-img's ${flags.split(/[ ,]/)[0]} is not supported by cowchain: ${why}`);
    });
  }
  return cmd;
}
