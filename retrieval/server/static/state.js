// What the page shows: one object, read and written by every module.

export const state = {
  // What is searched: {kind: "text", q} | {kind: "photo", file, url, name} | {kind: "similar", id, name, thumb}
  source: null,
  mode: "photos",        // "photos" or "texts": which collection is searched
  results: [],
  offset: 0,
  done: true,
  loading: false,
  seq: 0,                // drops responses of superseded searches
  viewerIndex: -1,
  textsAvailable: false,
};
