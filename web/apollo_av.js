// APOLLO-AV frontend extension: an inline player (video with sound) on Apollo Save/Preview AV, and
// an AV sampler that only shows the inputs its task uses. Imports are relative because the pack's
// folder name is whatever the user cloned it as (served at /extensions/<folder>/apollo_av.js).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EXTENSION = "apollo.av";
const PLAYER_NODES = new Set(["ApolloSaveAV", "ApolloPreviewAV"]);
const SAMPLER = "ApolloSampler";
const UI_KEY = "apollo_av";
// Which optional sockets and guidance widgets each task reads (mirrors apollo_core.tasks).
const TASK_SOCKETS = { T2AV: [], TI2AV: ["image"], TI2V: ["image"], T2V: [], T2A: [], V2A: ["video"], A2V: ["audio"] };
const TASK_WIDGETS = {
  video_cfg: ["T2AV", "TI2AV", "TI2V", "T2V", "A2V"],
  audio_cfg: ["T2AV", "TI2AV", "T2A", "V2A"],
  video_sync_cfg: ["T2AV", "TI2AV", "A2V"], // the video follows the audio: tasks with both streams
  audio_sync_cfg: ["T2AV", "TI2AV", "V2A"],
};

function viewUrl(file) {
  const { filename, subfolder = "", type = "output" } = file;
  const query = new URLSearchParams({ filename, subfolder, type });
  return api.apiURL(`/view?${query}`);
}

function fitNode(node) {
  const size = node.computeSize();
  node.setSize([Math.max(node.size[0], size[0]), size[1]]);
  node.setDirtyCanvas(true, true);
}

function showPlayer(node, file) {
  let video = node.__apolloPlayer;
  if (!video) {
    video = document.createElement("video");
    Object.assign(video, { controls: true, loop: true, playsInline: true, preload: "metadata" });
    video.dataset.apolloPlayer = String(node.id);
    video.style.cssText = "width:100%;height:100%;object-fit:contain;background:#000;border-radius:4px";
    // the player is as tall as the node's width at the clip's aspect ratio (square until loaded)
    const height = (width) => {
      const aspect = video.videoWidth ? video.videoHeight / video.videoWidth : 1;
      return Math.max(120, Math.round((width - 20) * aspect));
    };
    const widget = node.addDOMWidget("apollo_player", "apollo_av_player", video, {
      serialize: false, hideOnZoom: false, margin: 4,
      getMinHeight: () => height(node.size[0]), getHeight: () => height(node.size[0]),
    });
    widget.computeSize = (width = node.size[0]) => [width, height(width)];
    video.addEventListener("loadedmetadata", () => fitNode(node));
    node.__apolloPlayer = video;
  }
  video.dataset.filename = file.filename;
  video.src = viewUrl(file);
  fitNode(node);
}

// `hidden` stops drawing; the zero height (the long-standing litegraph idiom) gives the row back
function setHidden(widget, hidden) {
  if (hidden === !!widget.hidden) return;
  widget.hidden = hidden;
  if (hidden) {
    widget.__apolloComputeSize = widget.computeSize;
    widget.computeSize = () => [0, -4];
  } else if (widget.__apolloComputeSize) {
    widget.computeSize = widget.__apolloComputeSize;
  } else {
    delete widget.computeSize;
  }
}

function applyTask(node) {
  const task = node.widgets?.find((w) => w.name === "task")?.value;
  const used = new Set(TASK_SOCKETS[task] ?? []);
  for (const [name, type] of Object.entries(node.constructor.__apolloOptional ?? {})) {
    const index = node.inputs?.findIndex((input) => input.name === name) ?? -1;
    if (used.has(name) && index === -1) node.addInput(name, type);
    // a connected socket stays (the link is the user's), it is just not read by this task
    if (!used.has(name) && index !== -1 && node.inputs[index].link == null) node.removeInput(index);
  }
  for (const widget of node.widgets ?? []) {
    if (widget.name in TASK_WIDGETS) setHidden(widget, !TASK_WIDGETS[widget.name].includes(task));
  }
  fitNode(node);
}

function chain(prototype, method, after) {
  const original = prototype[method];
  prototype[method] = function (...args) {
    const result = original?.apply(this, args);
    after.apply(this, args);
    return result;
  };
}

app.registerExtension({
  name: EXTENSION,
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (PLAYER_NODES.has(nodeData.name)) {
      chain(nodeType.prototype, "onExecuted", function (output) {
        const file = output?.[UI_KEY]?.[0];
        if (file) showPlayer(this, file);
      });
    }
    if (nodeData.name === SAMPLER) {
      const optional = nodeData.input?.optional ?? {};
      nodeType.__apolloOptional = Object.fromEntries(Object.entries(optional).map(([name, spec]) => [name, spec[0]]));
      chain(nodeType.prototype, "onNodeCreated", function () {
        const task = this.widgets?.find((w) => w.name === "task");
        if (task) {
          const callback = task.callback;
          task.callback = (...args) => {
            const result = callback?.apply(task, args);
            applyTask(this);
            return result;
          };
        }
        applyTask(this);
      });
      chain(nodeType.prototype, "onConfigure", function () {
        applyTask(this);
      });
    }
  },
  async setup() {
    window.__apolloAV = { extension: EXTENSION, ready: true };
  },
});
