// The lifetime of one call (which may span several HTTP requests: retries, reconnects): the caller's
// AbortSignal and timeout folded into one signal, and the mapping of whatever went wrong to a TypecaseError
// (the caller aborted: CANCELLED; the timeout passed: DEADLINE_EXCEEDED; anything thrown by fetch or a body
// read: UNAVAILABLE).

import { TypecaseError, cancelledError, deadlineError, networkError } from "../errors.js";

export class CallScope {
  private readonly controller = new AbortController();
  private readonly timer?: ReturnType<typeof setTimeout>;
  private timedOut = false;
  private readonly onAbort = () => this.controller.abort();

  constructor(
    private readonly callerSignal: AbortSignal | undefined,
    private readonly timeoutMs: number | undefined,
  ) {
    if (callerSignal?.aborted) this.controller.abort();
    else callerSignal?.addEventListener("abort", this.onAbort, { once: true });
    if (timeoutMs !== undefined && timeoutMs > 0 && Number.isFinite(timeoutMs)) {
      this.timer = setTimeout(() => {
        this.timedOut = true;
        this.controller.abort();
      }, timeoutMs);
    }
  }

  /** Aborted when the caller aborts or the timeout passes. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get aborted(): boolean {
    return this.controller.signal.aborted;
  }

  /** A signal for one HTTP request of this call: aborted with the call, or by `abort()` of its own controller. */
  attempt(): AbortController {
    const controller = new AbortController();
    if (this.aborted) controller.abort();
    else this.signal.addEventListener("abort", () => controller.abort(), { once: true });
    return controller;
  }

  /** Throws the call's CANCELLED or DEADLINE_EXCEEDED error if it is over. */
  check(): void {
    if (this.aborted) throw this.fail(undefined);
  }

  /** The TypecaseError for a failure of this call. */
  fail(error: unknown): TypecaseError {
    if (this.timedOut) return deadlineError(this.timeoutMs ?? 0);
    if (this.callerSignal?.aborted) return cancelledError(this.callerSignal.reason);
    if (error instanceof TypecaseError) return error;
    return networkError(error);
  }

  close(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.callerSignal?.removeEventListener("abort", this.onAbort);
  }
}

/** Resolves after `ms`, or rejects with the call's error as soon as the call is aborted. */
export function sleep(ms: number, scope: CallScope): Promise<void> {
  return new Promise((resolve, reject) => {
    if (scope.aborted) {
      reject(scope.fail(undefined));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(scope.fail(undefined));
    };
    const timer = setTimeout(() => {
      scope.signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    scope.signal.addEventListener("abort", onAbort, { once: true });
  });
}
