/**
 * What recovering an interrupted operation did (recover.ts dispatches; each operation's file
 * holds its own recovery: create-snapshot.ts, delete-snapshot.ts).
 */
import type { Journal } from './journal.js';

/** What Nova did with an accepted request that never reported, as the operator knows it. */
export type NovaOutcome = 'done' | 'failed';

export interface Recovery {
  journal: Journal;
  /**
   * `completed`: it had finished; only the journal was left. `rolled-back`: a create undone.
   * `adopted`: a create kept and recorded (the guest was on the new file). `finished`: a
   * delete's remaining steps done. `rerun`: a delete run again from the current chain.
   */
  action: 'completed' | 'rolled-back' | 'adopted' | 'finished' | 'rerun';
  detail: string;
}
