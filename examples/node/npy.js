// Reading and writing NumPy .npy files (format 1.0-3.0, little-endian float32/int64, C order):
// the tensors the example takes in and gives back, so that any language can produce and check them.
'use strict';
const fs = require('node:fs');

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // "\x93NUMPY"
const TYPES = { '<f4': ['float32', Float32Array], '<i8': ['int64', BigInt64Array] };

function readNpy(path) {
  const data = fs.readFileSync(path);
  if (!data.subarray(0, 6).equals(MAGIC)) throw new Error(`${path} is not a .npy file`);
  const major = data[6];
  const headerLength = major === 1 ? data.readUInt16LE(8) : data.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = data.toString('latin1', start, start + headerLength);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${path} is in Fortran order; save it C-ordered`);
  if (!(descr in TYPES)) throw new Error(`${path} holds ${descr}; give float32 ('<f4') or int64 ('<i8')`);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',').filter((s) => s.trim()).map(Number);
  const [type, ArrayType] = TYPES[descr];
  const body = data.subarray(start + headerLength);
  const values = new ArrayType(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
  return { type, shape, values };
}

function writeNpy(path, tensor) {
  const descr = Object.keys(TYPES).find((key) => TYPES[key][0] === tensor.type);
  if (!descr) throw new Error(`cannot write a ${tensor.type} tensor as .npy`);
  const dims = tensor.dims.map(Number);
  const shape = dims.length === 1 ? `(${dims[0]},)` : `(${dims.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n'; // the data starts 64-byte aligned
  const prefix = Buffer.alloc(10);
  MAGIC.copy(prefix);
  prefix[6] = 1;
  prefix.writeUInt16LE(header.length, 8);
  const data = tensor.data;
  fs.writeFileSync(path, Buffer.concat([prefix, Buffer.from(header, 'latin1'),
    Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

module.exports = { readNpy, writeNpy };
