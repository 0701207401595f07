// What the signed-in user may do: their role's permissions (GetMe names the role; every user may read roles with
// GetRole). Pages hide the controls a user cannot use instead of offering them and showing the server's refusal;
// the server still checks every call.
import { UserRole } from "@typecase/client/gen/typecase/v1/auth_pb.js";
import { useEffect, useState } from "preact/hooks";
import { onAuthChange, tc } from "./api";

const NONE: ReadonlySet<string> = new Set();
let known: Promise<ReadonlySet<string>> | null = null; // one lookup per sign-in, shared by every page
onAuthChange(() => {
  known = null;
});

async function lookUp(): Promise<ReadonlySet<string>> {
  const user = (await tc.auth.getMe({})).user;
  const role = user?.roleName || (user?.role === UserRole.ADMIN ? "admin" : "user");
  return new Set<string>((await tc.roles.getRole({ name: role })).role?.permissions ?? []);
}

function load(): Promise<ReadonlySet<string>> {
  const pending =
    known ??
    lookUp().catch((e: unknown) => {
      known = null; // a failed lookup is retried by the next page that asks
      throw e;
    });
  known = pending;
  return pending;
}

/** The signed-in user's permissions: empty until known, so guarded controls appear once allowed, never flicker away. */
export function usePermissions(): ReadonlySet<string> {
  const [permissions, setPermissions] = useState(NONE);
  useEffect(() => {
    let live = true;
    load().then(
      (p) => live && setPermissions(p),
      () => undefined, // the controls stay hidden; the page's own calls report the error
    );
    return () => {
      live = false;
    };
  }, []);
  return permissions;
}
