// Package services is the sample application that `trellis demo` meshes:
// four small programs that run as separate processes of the one trellis
// binary, each started by a hidden subcommand of [Command].
//
//   - emoji   — gRPC service trellis.demo.v1.Emoji: the catalogue of emojis.
//   - voting  — gRPC service trellis.demo.v1.Voting: counts votes; it is the
//     slower back end (5–25 ms added to every call) and fails a share of votes.
//   - web     — an HTTP/JSON front end that calls emoji and voting.
//   - traffic — a traffic generator that lists and votes through web and
//     prints a summary line every few seconds.
//
// The programs speak plaintext: the mesh, not the application, provides
// mutual TLS. Each also has a plain Go entry point ([RunEmoji], [RunVoting],
// [RunWeb], [RunTraffic]) that serves until its context is cancelled and
// then stops gracefully, returning nil.
package services
