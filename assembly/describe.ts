// Header facts as a JSON string for the host's `info`.
import { Image } from "./image";
import { Qcow2Image } from "./qcow2";
import { INCOMPAT_CORRUPT, INCOMPAT_DIRTY, COMPAT_LAZY_REFCOUNTS } from "./header";

/**
 * JSON string literal; header strings are untrusted bytes. Built from runs of plain characters
 * rather than one concatenation per character: a 100-character backing name made 100 strings
 * of growing length, garbage that every image of a chain left for the collector.
 */
export function jsonString(s: string): string {
  let first = 0;
  while (first < s.length && plain(s.charCodeAt(first))) first++;
  if (first == s.length) return "\"" + s + "\"";
  const parts = new Array<string>();
  parts.push("\"");
  let from = 0;
  for (let i = first; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (plain(c)) continue;
    if (i > from) parts.push(s.substring(from, i));
    if (c == 0x22) parts.push("\\\"");
    else if (c == 0x5c) parts.push("\\\\");
    else parts.push("\\u00" + (c < 16 ? "0" : "") + c.toString(16));
    from = i + 1;
  }
  if (s.length > from) parts.push(s.substring(from));
  parts.push("\"");
  return parts.join("");
}

/** A character a JSON string holds as it is: not a quote, a backslash or a control character. */
function plain(c: i32): bool { return c != 0x22 && c != 0x5c && c >= 0x20; }

function field(name: string, value: string): string { return "\"" + name + "\":" + value; }

export function describeImage(img: Image): string {
  if (!(img instanceof Qcow2Image)) {
    return "{" + field("format", "\"raw\"") + "," + field("virtualSize", img.virtualSize().toString()) + "}";
  }
  const q = changetype<Qcow2Image>(img);
  const h = q.h;
  const parts = new Array<string>();
  parts.push(field("format", "\"qcow2\""));
  parts.push(field("version", h.version.toString()));
  parts.push(field("virtualSize", h.size.toString()));
  parts.push(field("clusterBits", h.clusterBits.toString()));
  parts.push(field("clusterSize", h.clusterSize.toString()));
  // An empty name (length 0, or a NUL first) is no backing file, as in qemu.
  parts.push(field("backingFile", h.backingName.length > 0 ? jsonString(h.backingName) : "null"));
  parts.push(field("backingFormat", h.backingFormat.length > 0 ? jsonString(h.backingFormat) : "null"));
  parts.push(field("cryptMethod", h.cryptMethod.toString()));
  parts.push(field("cryptoOffset", h.cryptoOffset.toString()));
  parts.push(field("cryptoLength", h.cryptoLength.toString()));
  parts.push(field("l1Size", h.l1Size.toString()));
  parts.push(field("l1Offset", h.l1Offset.toString()));
  parts.push(field("refcountTableOffset", h.rtOffset.toString()));
  parts.push(field("refcountTableClusters", h.rtClusters.toString()));
  parts.push(field("nbSnapshots", h.nbSnapshots.toString()));
  parts.push(field("snapshotsOffset", h.snapshotsOffset.toString()));
  parts.push(field("incompatibleFeatures", h.incompat.toString()));
  parts.push(field("compatibleFeatures", h.compat.toString()));
  parts.push(field("autoclearFeatures", h.autoclear.toString()));
  parts.push(field("refcountOrder", h.refcountOrder.toString()));
  parts.push(field("refcountBits", (1 << h.refcountOrder).toString()));
  parts.push(field("headerLength", h.headerLength.toString()));
  parts.push(field("compressionType", h.compressionType.toString()));
  parts.push(field("extendedL2", h.extendedL2 ? "true" : "false"));
  parts.push(field("dirty", (h.incompat & INCOMPAT_DIRTY) != 0 ? "true" : "false"));
  parts.push(field("corrupt", (h.incompat & INCOMPAT_CORRUPT) != 0 ? "true" : "false"));
  parts.push(field("lazyRefcounts", (h.compat & COMPAT_LAZY_REFCOUNTS) != 0 ? "true" : "false"));
  const exts = new Array<string>();
  for (let i = 0; i < h.extensions.length; i++) {
    const e = h.extensions[i];
    exts.push("{" + field("magic", e.magic.toString()) + "," + field("length", e.data.length.toString()) + "}");
  }
  parts.push(field("extensions", "[" + exts.join(",") + "]"));
  return "{" + parts.join(",") + "}";
}
