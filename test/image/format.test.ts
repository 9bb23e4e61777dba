// The one parser of format names (src/image/format.ts): what every option, request, record and
// header goes through.
import { describe, expect, it } from 'vitest';
import { IMAGE_FORMATS, isImageFormat, parseImageFormat } from '../../src/image/format.js';
import { imageFormatSchema } from '../../src/image/format-schema.js';
import { codeOf } from '../support/errors.js';

describe('image format names', () => {
  it('accepts raw and qcow2 only, exactly spelt', () => {
    expect([...IMAGE_FORMATS]).toEqual(['raw', 'qcow2']);
    for (const f of IMAGE_FORMATS) {
      expect(parseImageFormat(f, 'format')).toBe(f);
      expect(isImageFormat(f)).toBe(true);
      expect(imageFormatSchema().parse(f)).toBe(f);
    }
    for (const bad of ['RAW', 'qcow', 'vmdk', '', ' raw', null, 1]) {
      expect(isImageFormat(bad), String(bad)).toBe(false);
      expect(imageFormatSchema().safeParse(bad).success, String(bad)).toBe(false);
    }
  });

  it('names what was wrong, with ECOW_UNKNOWN_FORMAT or the code asked for', () => {
    expect(codeOf(() => parseImageFormat('vmdk', 'backing format'))).toBe('ECOW_UNKNOWN_FORMAT');
    expect(() => parseImageFormat('vmdk', 'backing format')).toThrow('backing format "vmdk" is not raw or qcow2');
    expect(codeOf(() => parseImageFormat('vmdk', 'output format', 'ECOW_BAD_ARGUMENT'))).toBe('ECOW_BAD_ARGUMENT');
  });
});
