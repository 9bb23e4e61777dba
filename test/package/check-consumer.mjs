// tsc --noEmit -p tsconfig.json in the working directory, with skipLibCheck off for the files
// that are the consumer's own and the package's (node_modules/cowchain/**), and not for the
// dependencies' and @types/node's declarations: the full check of those (skipLibCheck off for
// the whole program) cost ~5 s of CPU, and an error there is not the package's. Diagnostics are
// printed as tsc prints them (file(line,col): error TSnnnn: …); exit 2 when there is one, as tsc.
import * as path from 'node:path';
import ts from 'typescript';

const config = ts.getParsedCommandLineOfConfigFile(path.resolve('tsconfig.json'), {}, {
  ...ts.sys,
  onUnRecoverableConfigFileDiagnostic: (d) => {
    throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
  },
});
if (config.options.skipLibCheck !== false) throw new Error('check-consumer.mjs: the tsconfig must set skipLibCheck: false');
const program = ts.createProgram({ rootNames: config.fileNames, options: config.options, projectReferences: config.projectReferences });
const checked = program.getSourceFiles().filter((sf) => !sf.fileName.includes('/node_modules/') || sf.fileName.includes('/node_modules/cowchain/'));
const diagnostics = [
  ...config.errors,
  ...program.getOptionsDiagnostics(),
  ...program.getGlobalDiagnostics(),
  ...program.getSyntacticDiagnostics(),
  ...checked.flatMap((sf) => program.getSemanticDiagnostics(sf)),
];
const host = { getCanonicalFileName: (f) => f, getCurrentDirectory: () => process.cwd(), getNewLine: () => '\n' };
process.stdout.write(ts.formatDiagnostics(diagnostics, host));
// (a guard: the package's declarations were among the files checked)
if (!checked.some((sf) => sf.fileName.includes('/node_modules/cowchain/'))) {
  process.stdout.write('check-consumer.mjs: no declaration of the package was checked\n');
  process.exitCode = 2;
}
if (diagnostics.length > 0) process.exitCode = 2;
