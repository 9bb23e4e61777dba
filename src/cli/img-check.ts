import { checkImage, formatCheckHuman, formatCheckJson, type RepairMode } from '../image/check.js';
import { CowError } from '../errors.js';
import { print } from './output.js';
import { writeStderr } from './write.js';
import { imageArgument } from './secrets.js';

/** The exit status carries meaning here (2 corrupt, 3 leaks, 63 unsupported format); main() returns it. */
function exitStatus(code: number): void {
  if (code !== 0) process.exitCode = code;
}

function parseRepair(r: string | undefined): RepairMode | undefined {
  if (r === undefined) return undefined;
  if (r === 'leaks' || r === 'all') return r;
  throw new CowError('ECOW_BAD_ARGUMENT', `invalid repair mode "${r}" (expected leaks or all)`);
}

export interface CheckCliOptions {
  f?: string;
  output: string;
  r?: string;
  forceShare?: boolean;
  object?: string[];
  imageOpts?: boolean;
}

/** `img check`: qemu-img check's output, JSON and exit status (0 clean, 1 failed, 2 corrupt, 3 leaks). */
export async function imgCheck(arg: string, o: CheckCliOptions): Promise<void> {
  const { file, format } = await imageArgument(arg, o);
  const repair = parseRepair(o.r);
  if (repair && o.forceShare) throw new CowError('ECOW_BAD_ARGUMENT', '-U (force-share) cannot be used with -r: a repair writes the image');
  const outcome = checkImage(file, { format, repair, readLocks: !o.forceShare });
  for (const line of outcome.log) writeStderr(line + '\n');
  if (outcome.result) print(o.output === 'json' ? formatCheckJson(outcome) : formatCheckHuman(outcome));
  // qemu-img's words after the code every cowchain error line has: 63 has no check, 1 failed
  if (outcome.error) writeStderr(`cowchain: ${outcome.exitCode === 63 ? 'ECOW_CHECK_UNSUPPORTED' : 'ECOW_CHECK_FAILED'}: ${outcome.error}\n`);
  exitStatus(outcome.exitCode);
}
