// Explain a pre-processed image batch with an onnxcam explain model, from Node.js, with no Python:
//
//   node explain.js MODEL.cam.onnx INPUT.npy [--target 2[,1,...]] [--target-weights W.npy] [--out DIR]
//
// MODEL.cam.onnx: exported with `onnxcam export MODEL -o MODEL.cam.onnx --target-inputs required`.
// INPUT.npy is the model's float32 input batch (N, 3, H, W), pre-processed as the model expects.
// --target: one class for all images or one per image (-1 = the model's default, top-1);
// --target-weights: the score weighting w (float32, broadcastable to the batch-first score).
// Prints one JSON line (the class explained and its score per image); with --out writes every
// output as OUTPUT.npy (the model's own, e.g. logits.npy, and cam.npy, cam_target.npy, cam_score.npy).
'use strict';
const path = require('node:path');
const ort = require('onnxruntime-node');
const { readNpy, writeNpy } = require('./npy.js');

const TARGET = 'target'; // the explain model's interface: README "The explain model", onnxcam/contract.py
const TARGET_WEIGHTS = 'target_weights';

function parseArguments(argv) {
  const args = { positional: [] };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
      return argv[++i];
    };
    if (flag === '--target') args.target = value().split(',').map((v) => BigInt(v.trim()));
    else if (flag === '--target-weights') args.targetWeights = value();
    else if (flag === '--out') args.out = value();
    else if (flag.startsWith('--')) throw new Error(`unknown option ${flag}`);
    else args.positional.push(flag);
  }
  if (args.positional.length !== 2) throw new Error('give MODEL.cam.onnx and INPUT.npy');
  return args;
}

// onnxruntime-node feeds only the inputs its session lists, and lists no overridable initializer:
// the default export's target inputs (which carry defaults) would be dropped without a word.
function checkTargetInputs(session) {
  if (!session.inputNames.includes(TARGET) || !session.inputNames.includes(TARGET_WEIGHTS)) {
    throw new Error('this explain model has optional target inputs, which onnxruntime-node cannot feed; '
      + 'export it with: onnxcam export MODEL -o MODEL.cam.onnx --target-inputs required');
  }
}

function tensor(array, name) {
  if (array.type !== 'float32' && name !== TARGET) throw new Error(`${name} must hold float32 values`);
  return new ort.Tensor(array.type, array.values, array.shape);
}

// The defaults are what the optional form carries: target [-1], target_weights all NaN, of shape [1, ..., 1].
function feeds(session, args) {
  const image = session.inputNames.find((name) => name !== TARGET && name !== TARGET_WEIGHTS);
  const target = args.target || [-1n];
  const rank = session.inputMetadata.find((input) => input.name === TARGET_WEIGHTS).shape.length;
  const weights = args.targetWeights ? readNpy(args.targetWeights)
    : { type: 'float32', shape: new Array(rank).fill(1), values: Float32Array.of(NaN) };
  return {
    [image]: tensor(readNpy(args.positional[1]), image),
    [TARGET]: new ort.Tensor('int64', BigInt64Array.from(target), [target.length]),
    [TARGET_WEIGHTS]: tensor(weights, TARGET_WEIGHTS),
  };
}

async function main() {
  const args = parseArguments(process.argv.slice(2));
  const session = await ort.InferenceSession.create(args.positional[0]);
  checkTargetInputs(session);
  const outputs = await session.run(feeds(session, args));
  if (args.out) {
    for (const [name, tensor] of Object.entries(outputs)) writeNpy(path.join(args.out, `${name}.npy`), tensor);
  }
  console.log(JSON.stringify({
    outputs: Object.fromEntries(Object.entries(outputs).map(([name, t]) => [name, t.dims])),
    cam_target: Array.from(outputs.cam_target.data, Number),
    cam_score: Array.from(outputs.cam_score.data),
  }));
}

main().catch((error) => {
  console.error(`Error: ${error.message.split('\n')[0]}`);
  process.exit(1);
});
