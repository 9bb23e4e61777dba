// `cowchain volume …` and `cowchain snapshot …` as the user sees them: names, options and help.
// Every command takes `--dir D --volume VOL`. The actions load volume.ts (the volume driver, zod,
// and for attached volumes the Nova client) when they run.
import type { Command } from 'commander';
import { collect } from './args.js';
import type { CommandGroup } from './command-group.js';
import { outputOption } from './common-options.js';
import { COORDINATION_HELP } from './coordination-help.js';

const PROGRESS = 'print progress as qemu-img -p does, (x.xx/100%), on stderr (stdout is the result)';
import { NOVA_TOKEN_ENV, STATUS_TOKEN_ENV } from './nova-tokens.js';

/** The options every command has. */
function common(cmd: Command): Command {
  return cmd
    .requiredOption('--dir <dir>', 'the volume directory (one share)')
    .requiredOption('--volume <uuid>', 'the volume id: a UUID (the volume-<uuid> files)')
    .addOption(outputOption())
    .option('--base-format <fmt>', 'format of the base image volume-<uuid> (raw or qcow2); needed when the volume has no volume-<uuid>.format record')
    .option('--probe-format', 'guess the base image format from its bytes when nothing says it (dangerous for raw volumes)')
    .option(
      '--secure-file-permissions <mode>',
      "Cinder's nas_secure_file_permissions: true (new files 660, a new overlay owned like its backing file), false (666), auto (secure on a new share, marked by .cinderSecureEnvIndicator)",
      'auto',
    )
    .option('--coordination <url>', COORDINATION_HELP)
    .option('--object <spec>', 'secret,id=ID,file=PATH[,format=raw|base64]: a key secret, read from a file, as qemu-img takes it (repeatable; data= is refused: it would put the secret in argv)', collect)
    .option('--key-secret <id>', "the --object secret that is the volume's key (an encrypted volume: every image a LUKS qcow2, as Cinder's encrypted volume types)")
    .option('--encrypt-iter-time <ms>', "PBKDF2 time (ms) to open the key slot of each encrypted image the command creates (qemu's encrypt.iter-time; default 2000)")
    .addHelpText('after', EXIT_HELP);
}

const EXIT_HELP = `
Exit codes: 0 done; 1 failed, with one stderr line "cowchain: ECOW_CODE: message" (ECOW_ACCESS: a
file or directory the command must write is not writable for this user; nothing was changed);
2 bad usage (ECOW_USAGE); 130 / 143 interrupted by SIGINT / SIGTERM (the volume's lock is released; an
interrupted snapshot create or delete is finished by the next command on the volume). A wait for
the volume's lock, and a pending operation finished first, are reported on stderr.`;

/** The options of a command that may act on an attached volume, through Nova. */
function novaOptions(cmd: Command): Command {
  return cmd
    .option('--nova-endpoint <url>', `Nova's compute endpoint, for in-use volumes (token: $${NOVA_TOKEN_ENV})`)
    .option(
      '--status-listen <host:port>',
      `serve Cinder's os-update_snapshot_status here while the command runs; Nova's Cinder endpoint must point at it (token Nova sends: $${STATUS_TOKEN_ENV})`,
    )
    .option('--nova-create-timeout <seconds>', "how long to wait for Nova's report on a snapshot create (Cinder: 600)")
    .option('--nova-delete-timeout <seconds>', "how long to wait for Nova's report on a snapshot delete (Cinder: 7200)");
}

const actions = () => import('./volume.js');

export const VOLUME: CommandGroup = {
  name: 'volume',
  description: 'Cinder-style volumes: a base image, snapshot overlays and an info file',
  commands: {
    create: (volume) =>
      common(volume.command('create').description('create the base image volume-<uuid>'))
        .requiredOption('--size <size>', 'virtual size (bytes, or with a k/M/G/T suffix)')
        .option('--format <fmt>', 'raw or qcow2 (recorded in volume-<uuid>.format; default raw, qcow2 with --encrypt)')
        .option('--encrypt', 'an encrypted volume: qcow2 with encrypt.format=luks (aes-256-xts-plain64), keyed by --key-secret')
        .action(async (o) => (await actions()).volumeCreate(o)),
    info: (volume) =>
      common(volume.command('info').description('the info file and the active chain as the headers record it (in a directory this user may not write, read without the lock)')).action(async (o) => (await actions()).volumeInfo(o)),
    'from-snapshot': (volume) =>
      common(volume.command('from-snapshot').description("create a new image holding a snapshot's content (flattened; in a directory this user may not write, read without the lock)"))
        .requiredOption('--snapshot <uuid>', 'the snapshot id: a UUID')
        .requiredOption('--out <file>', 'the new image (must not exist)')
        .option('-O, --format <fmt>', 'raw or qcow2 (default raw; an encrypted volume: encrypted qcow2, keyed by --key-secret)')
        .option('--size <size>', "virtual size (default: the snapshot's; never smaller)")
        .option('-p', PROGRESS)
        .action(async (o) => (await actions()).volumeFromSnapshot(o)),
    clone: (volume) =>
      novaOptions(common(volume.command('clone').description('clone into a new volume through a temporary snapshot')))
        .requiredOption('--to <uuid>', 'the new volume id (volume-<uuid> is created)')
        .option('--status <status>', "the source volume's status (available, in-use, backing-up)", 'available')
        .option('-O, --format <fmt>', 'raw or qcow2 (default raw; an encrypted volume: encrypted qcow2)')
        .option('--to-key-secret <id>', 'the --object secret that keys the clone of an encrypted volume (default: --key-secret)')
        .option('--size <size>', "virtual size (default: the source's; never smaller)")
        .option('--target-dir <dir>', 'directory of the new volume (default: --dir)')
        .option('-p', PROGRESS)
        .action(async (o) => (await actions()).volumeClone(o)),
    extend: (volume) =>
      common(volume.command('extend').description('grow the active image (refused while attached)'))
        .requiredOption('--size <size>', 'the new virtual size')
        .option('--status <status>', "the volume's status (available or extending)", 'available')
        .action(async (o) => (await actions()).volumeExtend(o)),
    revert: (volume) =>
      common(volume.command('revert').description('revert to the latest snapshot (detached only)'))
        .requiredOption('--snapshot <uuid>', 'the snapshot id: a UUID (must be the latest)')
        .option('--status <status>', "the volume's status (available or reverting)", 'available')
        .action(async (o) => (await actions()).volumeRevert(o)),
    delete: (volume) =>
      common(volume.command('delete').description('delete every file of the volume (idempotent)')).action(async (o) => (await actions()).volumeDelete(o)),
    fsck: (volume) =>
      novaOptions(common(volume.command('fsck').description('reconcile the info file with the chain on disk after a crash')))
        .option('--status <status>', "the volume's status: in-use never touches the file the guest writes", 'available')
        .option('--dry-run', 'report what would be done, change nothing')
        .option('--nova-outcome <outcome>', 'what Nova did with a request it accepted and never reported on, when the files cannot tell: done or failed')
        .option('--discard-journal', "drop an interrupted operation's journal unrecovered (after looking at it), then reconcile")
        .option('-p', PROGRESS)
        .action(async (o) => (await actions()).volumeFsck(o)),
  },
};

export const SNAPSHOT: CommandGroup = {
  name: 'snapshot',
  description: 'snapshots of a Cinder-style volume',
  commands: {
    create: (snapshot) =>
      novaOptions(common(snapshot.command('create').description('take a snapshot: a new qcow2 overlay becomes the active file')))
        .requiredOption('--snapshot <uuid>', 'the snapshot id: a UUID')
        .option('--status <status>', "the volume's status (available, in-use, backing-up)", 'available')
        .option('--size <size>', "virtual size of the overlay (default: the active image's)")
        .action(async (o) => (await actions()).snapshotCreate(o)),
    delete: (snapshot) =>
      novaOptions(common(snapshot.command('delete').description('delete a snapshot (commit down; unknown ids succeed)')))
        .requiredOption('--snapshot <uuid>', 'the snapshot id: a UUID')
        .option('--status <status>', "the volume's status (available, in-use, backing-up, deleting, downloading)", 'available')
        .option('-p', PROGRESS)
        .action(async (o) => (await actions()).snapshotDelete(o)),
  },
};
