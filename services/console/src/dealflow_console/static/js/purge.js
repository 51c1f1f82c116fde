// The purge dashboard for operators: status and backlog, the running run's progress
// (polled every second while it runs; the latest run's once it has finished), pause and
// resume, a dry run and its list, runs and their items, the policy and the holds.
// Everything through the purge service's API.

import { get, post, put, del } from "./api.js";
import { h, fill, field, when, mount, messages, announce } from "./ui.js";

const POLL_MS = 1000;

export async function purgePage() {
  document.title = "Purge · Dealflow";
  const msg = messages();
  const statusEl = h("section", { "aria-labelledby": "status-h" });
  const runningEl = h("section", { "aria-labelledby": "running-h" });
  const itemsEl = h("section", { "aria-labelledby": "items-h" });
  const runsEl = h("section", { "aria-labelledby": "runs-h" });
  const policyEl = h("section", { "aria-labelledby": "policy-h" });
  const holdsEl = h("section", { "aria-labelledby": "holds-h" });
  let followed = null;
  let stopped = false;

  const act = (fn, done) => async () => {
    try { await fn(); if (done) msg.ok(done); await refresh(); } catch (e) { msg.error(e); }
  };

  async function showItems(run) {
    const items = await get("purge", `/purge/runs/${run.id}/items`);
    fill(itemsEl, 
      h("h2", { id: "items-h" }, run.dry_run ? `Dry run: ${run.would_purge} would be purged` : `Run items (${items.length})`),
      h("table", {}, h("caption", { class: "visually-hidden" }, "Deals examined by the run"),
        h("thead", {}, h("tr", {}, ["Deal", "Outcome", "Reason", "Quotes purged", "When"].map((x) => h("th", { scope: "col" }, x)))),
        h("tbody", {}, items.length ? items.map((i) => h("tr", {}, h("td", {}, i.opportunity_id), h("td", {}, i.outcome.replace(/_/g, " ")),
          h("td", {}, i.reason || ""), h("td", {}, i.quotes_purged), h("td", {}, when(i.updated_at))))
          : h("tr", {}, h("td", { colspan: 5 }, "Nothing.")))));
  }

  /** A run's progress bar: while it runs, the deals it has dealt with of those it
   * planned; once finished, a full bar with its counts. The dashboard keeps showing the
   * latest run, so a run that ends between two polls is still seen to have ended. */
  function progress(run) {
    const kind = run.dry_run ? "Dry run" : "Run";
    const finished = run.status !== "running";
    const dealt = run.dry_run ? run.examined : run.purged + run.skipped + run.failed;
    const total = finished ? Math.max(run.examined, 1) : Math.max(run.planned || 0, run.examined, 1);
    const now = finished ? total : Math.min(dealt, total);
    const words = finished ? `finished, deals examined: ${run.examined}` : `${dealt} of ${run.planned ?? "?"} deals`;
    return [
      h("h2", { id: "running-h" }, finished ? `Latest run: ${kind.toLowerCase()} ${run.status}` : `${kind} running`),
      h("p", { id: "run-progress-label" }, `Progress: ${words}`),
      h("progress", { max: total, value: now, "aria-labelledby": "run-progress-label",
        "aria-valuemin": 0, "aria-valuemax": total, "aria-valuenow": now, "aria-valuetext": words }, `${now}/${total}`),
      h("p", {}, `examined ${run.examined}, purged ${run.purged}, would purge ${run.would_purge}, skipped ${run.skipped}, failed ${run.failed}, in progress ${run.in_progress}`,
        run.error ? ` · error: ${run.error}` : ""),
    ];
  }

  async function follow(run) {
    followed = run.id;
    while (!stopped && followed === run.id) {
      const now = await get("purge", `/purge/runs/${run.id}`);
      fill(runningEl, ...progress(now));
      if (now.status !== "running") {
        announce(`${now.dry_run ? "Dry run" : "Run"} ${now.status}`);
        msg.ok(`${now.dry_run ? "Dry run" : "Run"} ${now.status}: ${now.examined} examined, ${now.dry_run ? `${now.would_purge} would be purged` : `${now.purged} purged`}, ${now.skipped} skipped, ${now.failed} failed.`);
        followed = null;
        await showItems(now);
        await refresh();
        return;
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  async function start(dryRun) {
    try {
      const run = await post("purge", "/purge/runs", { dry_run: dryRun });
      msg.ok(`${dryRun ? "Dry run" : "Run"} started.`);
      await follow(run);
    } catch (e) { msg.error(e); }
  }

  async function refresh() {
    const [status, runs, policy, holds] = await Promise.all([
      get("purge", "/purge/status"), get("purge", "/purge/runs?limit=10"),
      get("purge", "/purge/policy"), get("purge", "/purge/holds"),
    ]);
    fill(statusEl, 
      h("h2", { id: "status-h" }, "Status"),
      h("dl", { class: "facts" },
        h("dt", {}, "Agent"), h("dd", {}, status.paused ? "paused" : "active"),
        h("dt", {}, "Next run"), h("dd", {}, status.paused ? "— (paused)" : when(status.next_run_at)),
        h("dt", {}, "Backlog"), h("dd", {}, `${status.backlog} deals past retention`),
        h("dt", {}, "In progress"), h("dd", {}, String(status.in_progress)),
        h("dt", {}, "Last run"), h("dd", {}, status.last_run ? `${status.last_run.status}, ${when(status.last_run.finished_at)}` : "none"),
        h("dt", {}, "Stuck deals"), h("dd", {}, status.stuck.length ? status.stuck.map((s) => `${s.opportunity_id} (${s.failed_step}: ${s.last_error})`).join("; ") : "none")),
      h("div", { class: "row" },
        status.paused
          ? h("button", { type: "button", onclick: act(() => post("purge", "/purge/resume"), "Agent resumed.") }, "Resume the agent")
          : h("button", { type: "button", onclick: act(() => post("purge", "/purge/pause"), "Agent paused.") }, "Pause the agent"),
        " ",
        h("button", { type: "button", onclick: () => start(true) }, "Dry run"), " ",
        h("button", { type: "button", class: "primary", onclick: () => start(false) }, "Run now")),
    );
    if (status.running_run && followed !== status.running_run.id) follow(status.running_run);
    if (!status.running_run && !followed) {
      fill(runningEl, status.last_run ? progress(status.last_run) : [h("h2", { id: "running-h" }, "Latest run"), h("p", {}, "No run has finished yet.")]);
    }
    fill(runsEl, h("h2", { id: "runs-h" }, "Recent runs"),
      h("table", {}, h("caption", { class: "visually-hidden" }, "Recent runs"),
        h("thead", {}, h("tr", {}, ["Started", "Kind", "Status", "Examined", "Purged", "Skipped", "Failed", "Duration", ""].map((x) => h("th", { scope: "col" }, x)))),
        h("tbody", {}, runs.map((r) => h("tr", {}, h("td", {}, when(r.started_at)), h("td", {}, r.dry_run ? "dry run" : r.trigger),
          h("td", {}, r.status), h("td", {}, r.examined), h("td", {}, r.dry_run ? `(${r.would_purge})` : r.purged), h("td", {}, r.skipped),
          h("td", {}, r.failed), h("td", {}, r.duration_seconds === null ? "—" : `${r.duration_seconds.toFixed(1)} s`),
          h("td", {}, h("button", { type: "button", onclick: () => showItems(r).catch((e) => msg.error(e)) }, `Items of the run started ${when(r.started_at)}`)))))));
    const inputs = {
      retention_days_won: h("input", { type: "number", min: 0, value: policy.retention_days_won }),
      retention_days_lost: h("input", { type: "number", min: 0, value: policy.retention_days_lost }),
      batch_size: h("input", { type: "number", min: 1, value: policy.batch_size }),
      schedule: h("input", { value: policy.schedule }),
      journal: h("input", { type: "checkbox", checked: policy.journal }),
    };
    fill(policyEl, h("h2", { id: "policy-h" }, `Policy (version ${policy.version})`),
      h("form", { class: "inline", "aria-label": "Purge policy", onsubmit: async (e) => {
        e.preventDefault();
        await act(() => put("purge", "/purge/policy", {
          retention_days_won: Number(inputs.retention_days_won.value), retention_days_lost: Number(inputs.retention_days_lost.value),
          batch_size: Number(inputs.batch_size.value), schedule: inputs.schedule.value, journal: inputs.journal.checked,
        }), "Policy saved.")();
      } },
        field("Keep won deals (days)", inputs.retention_days_won), field("Keep lost deals (days)", inputs.retention_days_lost),
        field("Batch size", inputs.batch_size), field("Schedule (cron, UTC)", inputs.schedule), field("Journal", inputs.journal),
        h("button", { type: "submit" }, "Save policy")));
    const holdId = h("input", { required: true });
    const holdReason = h("input", { required: true });
    fill(holdsEl, h("h2", { id: "holds-h" }, "Holds"),
      h("table", {}, h("caption", { class: "visually-hidden" }, "Deals on hold"),
        h("thead", {}, h("tr", {}, ["Deal", "Reason", "By", "Since", ""].map((x) => h("th", { scope: "col" }, x)))),
        h("tbody", {}, holds.length ? holds.map((x) => h("tr", {}, h("td", {}, x.opportunity_id), h("td", {}, x.reason), h("td", {}, x.placed_by),
          h("td", {}, when(x.placed_at)), h("td", {}, h("button", { type: "button", onclick: act(() => del("purge", `/purge/holds/${x.opportunity_id}`), "Hold lifted.") }, `Lift hold on ${x.opportunity_id}`))))
          : h("tr", {}, h("td", { colspan: 5 }, "No deal is on hold.")))),
      h("form", { class: "inline", "aria-label": "Place a hold", onsubmit: async (e) => {
        e.preventDefault();
        await act(() => post("purge", "/purge/holds", { opportunity_id: holdId.value.trim(), reason: holdReason.value.trim() }), "Hold placed.")();
      } }, field("Deal id", holdId), field("Reason", holdReason), h("button", { type: "submit" }, "Place hold")));
  }

  mount(h("h1", {}, "Purge agent"), msg.nodes, statusEl, runningEl, itemsEl, runsEl, policyEl, holdsEl);
  await refresh();
  return () => { stopped = true; };
}
