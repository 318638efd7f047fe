// Plain JavaScript, no build step. The access and refresh tokens are HttpOnly cookies the
// browser sends by itself; this script only ever sees the CSRF value, kept in this variable
// (module scope, not in localStorage: a reload forgets it; POST /auth/refresh gives a new one).
let csrf = null;

const $ = (id) => document.getElementById(id);

async function call(path, { method = "GET", body, withCsrf = false } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (withCsrf && csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = null;
  try { data = await response.json(); } catch { /* empty or not JSON */ }
  return { status: response.status, data };
}

function show(name, result) {
  $(`${name}-status`).textContent = String(result.status);
  const body = $(`${name}-body`);
  if (body) body.textContent = result.data ? JSON.stringify(result.data) : "";
}

function pending(name) {
  $(`${name}-status`).textContent = "…";
}

async function me() {
  pending("me");
  show("me", await call("/api/me"));
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  pending("login");
  const result = await call("/auth/login", {
    method: "POST",
    body: { username: $("username").value, password: $("password").value },
  });
  $("password").value = "";
  csrf = result.status === 200 ? result.data.csrf : null;
  $("login-status").textContent = String(result.status);
  if (result.status === 200) await me();
});

$("me-button").addEventListener("click", me);

$("post-button").addEventListener("click", async () => {
  pending("post");
  show("post", await call("/api/notes", { method: "POST", body: { text: "hello" }, withCsrf: true }));
});

$("post-nocsrf-button").addEventListener("click", async () => {
  pending("post-nocsrf");
  show("post-nocsrf", await call("/api/notes", { method: "POST", body: { text: "hello" } }));
});

async function refresh() {
  const result = await call("/auth/refresh", { method: "POST" });
  if (result.status === 200) csrf = result.data.csrf;
  return result;
}

$("refresh-button").addEventListener("click", async () => {
  pending("refresh");
  $("refresh-status").textContent = String((await refresh()).status);
});

$("logout-button").addEventListener("click", async () => {
  pending("logout");
  const logout = () => call("/auth/logout", { method: "POST", withCsrf: true });
  let result = await logout();
  // The access token expired (5 minutes) or the page was reloaded (csrf forgotten): refresh
  // once and retry, so the refresh family is revoked and the cookies cleared all the same.
  if ((result.status === 401 || result.status === 403) && (await refresh()).status === 200) {
    result = await logout();
  }
  if (result.status === 200) csrf = null;
  $("logout-status").textContent = String(result.status);
});
