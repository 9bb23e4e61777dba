/** The format field of validated input (zod): an `ImageFormat` (format.ts). Built at first use. */
import * as z from 'zod';
import { lazy } from '../lazy.js';
import { IMAGE_FORMATS } from './format.js';

export const imageFormatSchema = lazy(() => z.enum(IMAGE_FORMATS));
