() => {
  // gr.Plot (Gradio 6) mounts a fresh plotly div whenever its figure changes, so layout.uirevision
  // cannot keep a zoom across the live refreshes. Remember each plot's user-set axis ranges and
  // apply them to the new div; a double-click (autorange) forgets them.
  const PLOTS = ["reward-plot", "run-plot", "compare-plot"];
  const ranges = {};
  const remember = (id, change) => {
    for (const [key, value] of Object.entries(change)) {
      const axis = key.split(".")[0];
      if (!/^[xy]axis\d*$/.test(axis)) continue;
      if (key === `${axis}.autorange`) {
        delete ranges[id][`${axis}.range`];
      } else if (key === `${axis}.range`) {
        ranges[id][key] = value;
      } else if (key === `${axis}.range[0]` || key === `${axis}.range[1]`) {
        const range = ranges[id][`${axis}.range`] || [...document.querySelector(`#${id} .js-plotly-plot`)._fullLayout[axis].range];
        range[key.endsWith("[0]") ? 0 : 1] = value;
        ranges[id][`${axis}.range`] = range;
      }
    }
  };
  const watch = () => {
    for (const id of PLOTS) {
      const div = document.querySelector(`#${id} .js-plotly-plot`);
      if (!div || !div.on || !div._fullLayout || div.dataset.keepZoom) continue;
      div.dataset.keepZoom = "1";
      ranges[id] = ranges[id] || {};
      if (Object.keys(ranges[id]).length) window.Plotly.relayout(div, { ...ranges[id] });
      div.on("plotly_relayout", (change) => remember(id, change));
    }
  };
  new MutationObserver(watch).observe(document.body, { childList: true, subtree: true });
}
