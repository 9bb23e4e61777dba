// The folders of src/ form layers: engine → image → volume → nova / worker → cli, each importing
// only from those before it. A cycle between two folders (A imports B, B imports A, directly or
// around a loop) makes both one unit that must be understood together; this test fails on one,
// naming the imports that close it. Type-only imports count: they are coupling too.
import * as fs from 'node:fs';
import * as path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../support/bundle.js';

const SRC = path.join(ROOT, 'src');
const ASSEMBLY = path.join(ROOT, 'assembly');

/** The unit of a source file: its folder under src/, or the file itself at the top (errors.ts). */
function unitOf(file: string): string {
  const rel = path.relative(SRC, file);
  return rel.includes(path.sep) ? rel.split(path.sep)[0] : rel.replace(/\.ts$/, '');
}

/** Every import and re-export specifier of a TypeScript file (static, dynamic and `import type`). */
function specifiers(file: string): string[] {
  const src = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, true);
  const out: string[] = [];
  const visit = (node: ts.Node) => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) out.push(node.moduleSpecifier.text);
    if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && node.arguments[0] && ts.isStringLiteral(node.arguments[0])) out.push(node.arguments[0].text);
    if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) out.push(node.argument.literal.text);
    ts.forEachChild(node, visit);
  };
  visit(src);
  return out;
}

/** unit → unit → the imports (file: specifier) that make the edge. */
function folderGraph(): Map<string, Map<string, string[]>> {
  const graph = new Map<string, Map<string, string[]>>();
  const files = fs.readdirSync(SRC, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts')).map((f) => path.join(SRC, f));
  for (const file of files) {
    const from = unitOf(file);
    if (!graph.has(from)) graph.set(from, new Map());
    for (const spec of specifiers(file)) {
      if (!spec.startsWith('.')) continue;
      const target = path.resolve(path.dirname(file), spec).replace(/\.js$/, '.ts');
      if (!target.startsWith(SRC + path.sep)) continue;
      const to = unitOf(target);
      if (to === from) continue;
      const edges = graph.get(from)!;
      if (!edges.has(to)) edges.set(to, []);
      edges.get(to)!.push(`${path.relative(ROOT, file)}: ${spec}`);
    }
  }
  return graph;
}

/** file → file → the imports that make the edge, for the engine's sources (each file its own unit). */
function engineFileGraph(): Map<string, Map<string, string[]>> {
  const graph = new Map<string, Map<string, string[]>>();
  for (const name of fs.readdirSync(ASSEMBLY).filter((f) => f.endsWith('.ts'))) {
    const edges = new Map<string, string[]>();
    graph.set(name.replace(/\.ts$/, ''), edges);
    for (const spec of specifiers(path.join(ASSEMBLY, name))) {
      if (!spec.startsWith('./')) continue;
      const to = spec.slice(2).replace(/\.ts$/, '');
      if (!edges.has(to)) edges.set(to, []);
      edges.get(to)!.push(`assembly/${name}: ${spec}`);
    }
  }
  return graph;
}

/** The cycles of the graph, each as its units in order (one per strongly connected component). */
function cycles(graph: Map<string, Map<string, string[]>>): string[][] {
  // Tarjan's strongly connected components.
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const strong = (v: string) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v)?.keys() ?? []) {
      if (!idx.has(w)) {
        strong(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) strong(v);
  return found;
}

/** Each cycle with the imports that close it, for a readable failure. */
function cycleReport(graph: Map<string, Map<string, string[]>>): string[] {
  return cycles(graph).map((c) => {
    const edges = c.flatMap((a) => c.filter((b) => b !== a && graph.get(a)?.has(b)).map((b) => `  ${a} → ${b}: ${graph.get(a)!.get(b)!.join(', ')}`));
    return `cycle between ${c.join(', ')}:\n${edges.join('\n')}`;
  });
}

describe('layering of src/', () => {
  const graph = folderGraph();

  it('sees the folders and their imports', () => {
    for (const unit of ['engine', 'image', 'volume', 'nova', 'cli']) expect(graph.has(unit), unit).toBe(true);
    expect([...graph.get('image')!.keys()]).toContain('engine');
  });

  it('has no import cycle between folders', () => {
    expect(cycleReport(graph)).toEqual([]);
  });

  it('finds a cycle when there is one (the check has teeth)', () => {
    const g = new Map([
      ['a', new Map([['b', ['x']]])],
      ['b', new Map([['c', ['y']]])],
      ['c', new Map([['a', ['z']]])],
      ['d', new Map([['a', ['w']]])],
    ]);
    expect(cycles(g)).toEqual([['a', 'b', 'c']]);
  });
});

describe('layering of assembly/ (the engine)', () => {
  const graph = engineFileGraph();

  it('sees the engine files and their imports', () => {
    expect([...graph.get('qcow2')!.keys()]).toContain('mapping');
    expect([...graph.get('index')!.keys()]).toContain('qcow2');
  });

  it('has no import cycle between files', () => {
    expect(cycleReport(graph)).toEqual([]);
  });
});
