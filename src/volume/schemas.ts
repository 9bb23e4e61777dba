// The zod schemas `cowchain/volume` exports, built when it is imported. The driver itself builds
// them only for a value that is not plainly valid (info-file.ts, status.ts), so that a CLI volume
// command need not load zod.
import { volumeInfoSchema } from './info-file.js';
import { volumeStatusSchema } from './status.js';

/** The `volume-<vol>.info` file's content (info-file.ts). */
export const VolumeInfoSchema = volumeInfoSchema();
/** A Cinder volume status (status.ts). */
export const VolumeStatusSchema = volumeStatusSchema();
