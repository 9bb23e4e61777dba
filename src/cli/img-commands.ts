// The `img` command group as the user sees it: names, arguments, options and help. Each action
// loads its implementation when it runs (img-read, img-convert, img-check, img-create, img-chain),
// so that the engine, zod and the other commands' code are not loaded to print help or to run
// another command. qemu-img's options that a command lacks are refused by name (common-options.ts).
import { collect } from './args.js';
import type { CommandGroup } from './command-group.js';
import { FORCE_SHARE, outputOption, refuseQemuOptions } from './common-options.js';

const PROGRESS = 'print progress as qemu-img -p does: (x.xx/100%) on stdout, also when it is not a terminal';

/** Encrypted images (LUKS): qemu-img's forms for the key secrets (secrets.ts). */
const OBJECT = 'secret,id=ID,file=PATH: a key secret that --image-opts or -o encrypt.key-secret names (repeatable; data= is refused: it would put the secret in argv)';
const IMAGE_OPTS = 'the image argument is an option string: driver=qcow2,file.filename=F[,encrypt.key-secret=ID][,backing.encrypt.key-secret=ID…]';
const CREATE_O = 'cluster_size=…,compat=0.10|1.1,refcount_bits=…,extended_l2=on|off,compression_type=zlib|zstd,encrypt.format=luks,encrypt.key-secret=ID,encrypt.iter-time=MS (repeatable)';

/** qemu-img's options that `img map` lacks (the other commands take these two for encrypted images). */
const NO_OBJECTS = {
  '--object <objectdef>': 'there are no QOM objects (secrets for encrypted images, throttle groups)',
  '--image-opts': 'FILE is a file name, not a QemuOpts image description',
};
const NO_CACHE_MODES = {
  '-t <cache>': 'there are no cache modes: cowchain writes through the page cache and flushes once at the end',
  '-T <src_cache>': 'there are no cache modes: cowchain reads through the page cache',
};

export const IMG: CommandGroup = {
  name: 'img',
  description: 'qemu-img-like operations on one image or chain',
  commands: {
    info: (img) =>
      refuseQemuOptions(
        img
          .command('info')
          .description('show header facts (qemu-img info); a missing backing file is reported, the image itself still shown')
          .argument('<file>')
          .option('-f <format>', 'format of FILE (raw|qcow2); probed when absent')
          .addOption(outputOption())
          .option('--backing-chain', 'describe every image of the chain')
          .option('-U, --force-share', FORCE_SHARE)
          .option('--object <spec>', OBJECT, collect)
          .option('--image-opts', IMAGE_OPTS)
          .action(async (file: string, o) => (await import('./img-read.js')).imgInfo(file, o)),
        {},
      ),
    map: (img) =>
      refuseQemuOptions(
        img
          .command('map')
          .description('allocation map of the chain (qemu-img map)')
          .argument('<file>')
          .option('-f <format>', 'format of FILE (raw|qcow2); probed when absent')
          .addOption(outputOption())
          .option('-U, --force-share', FORCE_SHARE)
          .action(async (file: string, o) => (await import('./img-read.js')).imgMap(file, o)),
        {
          ...NO_OBJECTS,
          '--start-offset <offset>': 'the map always covers the whole image',
          '--max-length <length>': 'the map always covers the whole image',
        },
      ),
    convert: (img) =>
      refuseQemuOptions(
        img
          .command('convert')
          .description('write the guest view of a chain to a new image (qemu-img convert); zeros stay holes / unallocated')
          .argument('<src>')
          .argument('<dst>')
          .option('-f <format>', 'format of SRC (raw|qcow2); probed when absent')
          .option('-O <format>', 'output format (raw|qcow2)', 'raw')
          .option('-o <options>', `qcow2 target: ${CREATE_O}`, collect)
          .option('-c', 'compress the qcow2 target: every cluster holding data is stored compressed (deflate, or zstd with -o compression_type=zstd)')
          .option('-p', PROGRESS)
          .option('-q', 'quiet')
          .option('-U, --force-share', FORCE_SHARE)
          .option('--object <spec>', OBJECT, collect)
          .option('--image-opts', IMAGE_OPTS)
          .action(async (src: string, dst: string, o) => (await import('./img-convert.js')).imgConvert(src, dst, o)),
        {
          ...NO_CACHE_MODES,
          '--target-image-opts': 'DST is a file name',
          '-n': 'the target is always created',
          '-B <backing_file>': 'a target with a backing file is not supported',
          '-F <backing_fmt>': 'a target with a backing file is not supported',
          '-m <num_coroutines>': 'the copy runs in one thread',
          '-W': 'the copy runs in order',
          '-S <sparse_size>': 'zeroes are detected per cluster',
          '-C': 'copy offloading is not supported',
          '-l <snapshot>': 'internal snapshots are not read',
          '-s <snapshot>': 'internal snapshots are not read',
          '-r <rate_limit>': 'there is no rate limit',
          '--bitmaps': 'persistent bitmaps are not copied',
          '--salvage': 'a read error fails the convert',
        },
      ),
    check: (img) =>
      refuseQemuOptions(
        img
          .command('check')
          .description('check (and repair) refcounts and metadata (qemu-img check; exit 2 corrupt, 3 leaks, 63 a format without checks)')
          .argument('<file>')
          .option('-f <format>', 'format of FILE (raw|qcow2); probed when absent')
          .addOption(outputOption())
          .option('-r <mode>', 'repair: leaks (refcounts that are too high) or all (everything)')
          .option('-U, --force-share', 'check even while another process writes the image (results may be inconsistent); not with -r')
          .option('--object <spec>', 'accepted as qemu-img takes it; a check reads no encrypted data, so needs no key', collect)
          .option('--image-opts', IMAGE_OPTS)
          .action(async (file: string, o) => (await import('./img-check.js')).imgCheck(file, o)),
        { '-T <src_cache>': NO_CACHE_MODES['-T <src_cache>'], '-q': 'the report is always printed' },
      ),
    create: (img) =>
      refuseQemuOptions(
        img
          .command('create')
          .description("create an image (qemu-img create): SIZE takes k/M/G/T/P/E suffixes (1024-based); defaults to the backing file's size")
          .argument('<file>')
          .argument('[size]')
          .option('-f <format>', 'format of FILE (raw|qcow2)', 'raw')
          .option('-b <backing>', "backing file, stored exactly as given (relative to FILE's directory)")
          .option('-F <format>', 'format of the backing file (raw|qcow2); required with -b')
          .option('-u', 'unsafe: do not open the backing file (it need not exist); SIZE must be given')
          .option('-o <options>', CREATE_O, collect)
          .option('-q', 'quiet: do not print the Formatting line')
          .option('--object <spec>', OBJECT, collect)
          .action(async (file: string, size: string | undefined, o) => (await import('./img-create.js')).imgCreate(file, size, o)),
        {},
      ),
    commit: (img) =>
      refuseQemuOptions(
        img
          .command('commit')
          .description('copy what TOP allocates into its backing file (qemu-img commit); TOP is emptied unless -d')
          .argument('<top>')
          .option('-f <format>', 'format of TOP (raw|qcow2); probed when absent')
          .option('-b <base>', 'commit down to this image of the chain (implies -d)')
          .option('-d', 'leave TOP as it is')
          .option('-p', PROGRESS)
          .option('-q', 'quiet')
          .option('--object <spec>', OBJECT, collect)
          .option('--image-opts', IMAGE_OPTS)
          .action(async (top: string, o) => (await import('./img-chain.js')).imgCommit(top, o)),
        { '-t <cache>': NO_CACHE_MODES['-t <cache>'], '-r <rate_limit>': 'there is no rate limit' },
      ),
    rebase: (img) =>
      refuseQemuOptions(
        img
          .command('rebase')
          .description("change FILE's backing file (qemu-img rebase); safe by default, -u for header only")
          .argument('<file>')
          .requiredOption('-b <backing>', 'new backing file name as stored in the header ("" removes it: flatten)')
          .option('-F <format>', 'format of the new backing file (raw|qcow2); probed when absent')
          .option('-u', 'unsafe: rewrite the header only')
          .option('-p', PROGRESS)
          .option('-q', 'quiet')
          .option('--object <spec>', OBJECT, collect)
          .option('--image-opts', `${IMAGE_OPTS}; backing.encrypt.key-secret also opens the new backing file`)
          .action(async (file: string, o) => (await import('./img-chain.js')).imgRebase(file, o)),
        { ...NO_CACHE_MODES, '-f <format>': 'the format of FILE is probed', '-U': 'a rebase writes FILE', '-c': 'a rebase does not compress' },
      ),
    stream: (img) =>
      img
        .command('stream')
        .description("pull FILE's backing data into it down to BASE (libvirt blockRebase), then make BASE its backing file")
        .argument('<file>')
        .option('-b <base>', 'keep this image of the chain as the new backing file (default: pull everything)')
        .option('-p', PROGRESS)
        .option('--object <spec>', OBJECT, collect)
        .option('--image-opts', IMAGE_OPTS)
        .action(async (file: string, o) => (await import('./img-chain.js')).imgStream(file, o)),
  },
};
