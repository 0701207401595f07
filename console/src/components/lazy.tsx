// A view fetched as its own chunk when first shown (the first load stays within its budget): a spinner while it
// loads, an error with a retry when it cannot be fetched, the view itself afterwards (cached for the page's life).
import type { ComponentType } from "preact";
import { useEffect, useState } from "preact/hooks";
import { ErrorBox, Loading } from "./ui";

export function lazyView<P extends object>(load: () => Promise<ComponentType<P>>, label: string): ComponentType<P> {
  let pending: Promise<ComponentType<P>> | null = null;
  let loaded: ComponentType<P> | null = null;
  return function LazyView(props: P) {
    const [view, setView] = useState<ComponentType<P> | null>(() => loaded);
    const [error, setError] = useState<string | null>(null);
    const [attempt, setAttempt] = useState(0);
    useEffect(() => {
      if (loaded) return;
      let live = true;
      (pending ??= load()).then(
        (v) => {
          loaded = v;
          if (live) setView(() => v);
        },
        (e: Error) => {
          pending = null;
          if (live) setError(`Could not load the ${label} page: ${e.message}`);
        },
      );
      return () => {
        live = false;
      };
    }, [attempt]);
    if (error) return <ErrorBox error={error} onRetry={() => (setError(null), setAttempt((a) => a + 1))} />;
    if (!view) return <Loading label={`Loading ${label}…`} />;
    const View = view;
    return <View {...props} />;
  };
}
