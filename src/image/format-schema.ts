/** The format field of validated input (zod): an `ImageFormat` (format.ts). */
import * as z from 'zod';
import { IMAGE_FORMATS } from './format.js';

export const imageFormatSchema = z.enum(IMAGE_FORMATS);
