/**
 * `cowchain/testing`: test doubles for code that embeds the driver. `LoopbackNova` is a Nova API
 * on 127.0.0.1 that moves a `SimulatedGuest` between files and merges snapshots as Nova would,
 * then reports progress to a status endpoint: attached-volume paths run without a cloud.
 * @module cowchain/testing
 */
export { LoopbackNova, SimulatedGuest, type LoopbackNovaOptions, type LoopbackFaults, type GuestWrite } from '../nova/loopback.js';
