// The `img` command group as the user sees it: names, arguments, options and help. Each action
// loads its implementation when it runs (img-read, img-convert, img-check, img-create, img-chain),
// so that the engine, zod and the other commands' code are not loaded to print help or to run
// another command.
import type { Command } from 'commander';
import { collect } from './args.js';
import type { CommandGroup } from './command-group.js';

const FORCE_SHARE = 'read even while another process (qemu) writes the image, as qemu-img -U';

export const IMG: CommandGroup = {
  name: 'img',
  description: 'qemu-img-like operations on one image or chain',
  commands: {
    info: (img) =>
      img
        .command('info')
        .description('show header facts (qemu-img info)')
        .argument('<file>')
        .option('-f <format>', 'format of FILE (raw|qcow2); probed when absent')
        .option('--output <fmt>', 'human or json', 'human')
        .option('--backing-chain', 'describe every image of the chain')
        .option('-U, --force-share', FORCE_SHARE)
        .action(async (file: string, o) => (await import('./img-read.js')).imgInfo(file, o)),
    map: (img) =>
      img
        .command('map')
        .description('allocation map of the chain (qemu-img map)')
        .argument('<file>')
        .option('-f <format>', 'format of FILE (raw|qcow2); probed when absent')
        .option('--output <fmt>', 'human or json', 'human')
        .option('-U, --force-share', FORCE_SHARE)
        .action(async (file: string, o) => (await import('./img-read.js')).imgMap(file, o)),
    convert: (img) =>
      img
        .command('convert')
        .description('write the guest view of a chain to a new image (qemu-img convert); zeros stay holes / unallocated')
        .argument('<src>')
        .argument('<dst>')
        .option('-f <format>', 'format of SRC (raw|qcow2); probed when absent')
        .option('-O <format>', 'output format (raw|qcow2)', 'raw')
        .option('-o <options>', 'qcow2 target: cluster_size=…,compat=0.10|1.1,refcount_bits=…,extended_l2=on|off,compression_type=zlib|zstd (repeatable)', collect)
        .option('-c', 'compress the qcow2 target: every cluster holding data is stored compressed (deflate, or zstd with -o compression_type=zstd)')
        .option('-p', 'show a progress bar (on a terminal)')
        .option('-q', 'quiet')
        .option('-U, --force-share', FORCE_SHARE)
        .action(async (src: string, dst: string, o) => (await import('./img-convert.js')).imgConvert(src, dst, o)),
    check: (img) =>
      img
        .command('check')
        .description('check (and repair) refcounts and metadata (qemu-img check)')
        .argument('<file>')
        .option('-f <format>', 'format of FILE (raw|qcow2); probed when absent')
        .option('--output <fmt>', 'human or json', 'human')
        .option('-r <mode>', 'repair: leaks (refcounts that are too high) or all (everything)')
        .option('-U, --force-share', 'check even while another process writes the image (results may be inconsistent); not with -r')
        .action(async (file: string, o) => (await import('./img-check.js')).imgCheck(file, o)),
    create: (img) =>
      img
        .command('create')
        .description("create an image (qemu-img create): SIZE takes k/M/G/T/P/E suffixes (1024-based); defaults to the backing file's size")
        .argument('<file>')
        .argument('[size]')
        .option('-f <format>', 'format of FILE (raw|qcow2)', 'raw')
        .option('-b <backing>', "backing file, stored exactly as given (relative to FILE's directory)")
        .option('-F <format>', 'format of the backing file (raw|qcow2); required with -b')
        .option('-o <options>', 'cluster_size=…,compat=0.10|1.1,refcount_bits=…,extended_l2=on|off,compression_type=zlib|zstd (repeatable)', collect)
        .option('-q', 'quiet: do not print the Formatting line')
        .action(async (file: string, size: string | undefined, o) => (await import('./img-create.js')).imgCreate(file, size, o)),
    commit: (img) =>
      img
        .command('commit')
        .description('copy what TOP allocates into its backing file (qemu-img commit); TOP is emptied unless -d')
        .argument('<top>')
        .option('-b <base>', 'commit down to this image of the chain (implies -d)')
        .option('-d', 'leave TOP as it is')
        .option('-p', 'show a progress bar (on a terminal)')
        .option('-q', 'quiet')
        .action(async (top: string, o) => (await import('./img-chain.js')).imgCommit(top, o)),
    rebase: (img) =>
      img
        .command('rebase')
        .description("change FILE's backing file (qemu-img rebase); safe by default, -u for header only")
        .argument('<file>')
        .requiredOption('-b <backing>', 'new backing file name as stored in the header ("" removes it: flatten)')
        .option('-F <format>', 'format of the new backing file (raw|qcow2); probed when absent')
        .option('-u', 'unsafe: rewrite the header only')
        .option('-p', 'show a progress bar (on a terminal)')
        .option('-q', 'quiet')
        .action(async (file: string, o) => (await import('./img-chain.js')).imgRebase(file, o)),
    stream: (img) =>
      img
        .command('stream')
        .description("pull FILE's backing data into it down to BASE (libvirt blockRebase), then make BASE its backing file")
        .argument('<file>')
        .option('-b <base>', 'keep this image of the chain as the new backing file (default: pull everything)')
        .option('-p', 'show a progress bar (on a terminal)')
        .action(async (file: string, o) => (await import('./img-chain.js')).imgStream(file, o)),
  },
};
