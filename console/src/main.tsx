// Entry point: the shell (navigation, who is signed in) around one view per route.
import { UserRole } from "@typecase/client/gen/typecase/v1/auth_pb.js";
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { credentials, ensureFresh, handleError, onAuthChange, signOut, tc, type Credentials } from "./api";
import { lazyView } from "./components/lazy";
import { linkClick, navigate, useRoute } from "./router";
import { AdminView } from "./views/admin";
import { ChatView } from "./views/chat";
import { FlowsView } from "./views/flows";
import { KnowledgeView } from "./views/knowledge";
import { ModelsView } from "./views/models";
import { ProxyView } from "./views/proxy";
import { ServerView } from "./views/server";
import { SignInView } from "./views/signin";
import "@xyflow/react/dist/style.css";
import "./style.css";

// Pages fetched when first opened (their own chunks): the first load carries the chat and what most visits need.
const AssistantsView = lazyView(() => import("./views/assistants").then((m) => m.AssistantsView), "assistants");
const ToolsView = lazyView(() => import("./views/tools").then((m) => m.ToolsView), "tools");
const GroupsView = lazyView(() => import("./views/groups").then((m) => m.GroupsView), "groups");
const RolesView = lazyView(() => import("./views/roles").then((m) => m.RolesView), "roles");

const SECTIONS = [
  { path: "chat", label: "Chat" },
  { path: "knowledge", label: "Knowledge" },
  { path: "flows", label: "Flows" },
  { path: "assistants", label: "Assistants" },
  { path: "tools", label: "Tools" },
  { path: "proxy", label: "Proxy" },
  { path: "models", label: "Models" },
  { path: "groups", label: "Groups" },
  { path: "roles", label: "Roles" },
  { path: "access", label: "Access" },
  { path: "server", label: "Server" },
] as const;

type Me = { name: string; role: string };

function App() {
  const [creds, setCreds] = useState<Credentials | null>(credentials());
  const [notice, setNotice] = useState<string | undefined>();
  const [me, setMe] = useState<Me | null>(null);
  const route = useRoute();

  useEffect(
    () =>
      onAuthChange((c, reason) => {
        setCreds(c);
        if (!c) {
          setMe(null);
          setNotice(reason);
        }
      }),
    [],
  );

  useEffect(() => {
    if (!creds) return;
    let live = true;
    tc.auth
      .getMe({})
      .then((res) => {
        if (!live) return;
        const user = res.user;
        const role = user?.roleName || (user?.role === UserRole.ADMIN ? "admin" : "user");
        setMe({ name: user?.displayName || user?.username || "?", role: res.apiKeyId ? `${role}, API key` : role });
      })
      .catch((e) => live && handleError(e));
    return () => {
      live = false;
    };
  }, [creds]);

  if (!creds) return <SignInView notice={notice} />;

  const section = route[0] ?? "";
  if (!SECTIONS.some((s) => s.path === section)) {
    navigate("/chat", { replace: true });
    return null;
  }

  return (
    <div class="shell">
      <header class="topbar">
        <a class="brand" href="/chat" onClick={linkClick}>
          Typecase
        </a>
        <nav>
          {SECTIONS.map((s) => (
            <a key={s.path} href={`/${s.path}`} onClick={linkClick} class={section === s.path ? "active" : ""}>
              {s.label}
            </a>
          ))}
        </nav>
        <div class="who">
          {me && (
            <span class="muted" data-testid="whoami">
              {me.name} <span class="faint">({me.role})</span>
            </span>
          )}
          <button class="btn small ghost" onClick={() => signOut()}>
            Sign out
          </button>
        </div>
      </header>
      <main class="content">
        {section === "chat" && <ChatView sessionId={route[1]} />}
        {section === "knowledge" && <KnowledgeView kbId={route[1]} fileId={route[2]} />}
        {section === "flows" && <FlowsView flowId={route[1]} />}
        {section === "assistants" && <AssistantsView assistantId={route[1]} />}
        {section === "tools" && <ToolsView providerId={route[1]} />}
        {section === "proxy" && <ProxyView />}
        {section === "models" && <ModelsView />}
        {section === "groups" && <GroupsView groupId={route[1]} />}
        {section === "roles" && <RolesView name={route[1]} />}
        {section === "access" && <AdminView />}
        {section === "server" && <ServerView />}
      </main>
    </div>
  );
}

void ensureFresh().finally(() => render(<App />, document.getElementById("app")!));
