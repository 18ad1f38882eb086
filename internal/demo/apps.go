// Package demo runs a small meshed application on one machine: a front end
// ("web") that calls a back end ("api") through a pair of real proxies, and
// a traffic generator, so that the mesh has something to show.
package demo

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"
)

// apiHandler answers with a random emoji; a small share of requests fail
// and some are slow, as real back ends do.
func apiHandler(failRate float64) http.Handler {
	emojis := []string{"🌱", "🌿", "🍀", "🌵", "🌻", "🍄"}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rand.Float64() < 0.1 {
			time.Sleep(time.Duration(20+rand.IntN(30)) * time.Millisecond)
		}
		if rand.Float64() < failRate {
			http.Error(w, `{"error":"the api had a bad moment"}`, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"emoji": emojis[rand.IntN(len(emojis))]})
	})
}

// webHandler calls the api through its outbound proxy at apiURL and renders
// the answer.
func webHandler(apiURL string, client *http.Client) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := client.Get(apiURL + "/emoji")
		if err != nil {
			http.Error(w, "api unreachable: "+err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			http.Error(w, fmt.Sprintf("api answered %d", resp.StatusCode), http.StatusBadGateway)
			return
		}
		var v struct{ Emoji string }
		json.Unmarshal(body, &v)
		fmt.Fprintf(w, "<h1>Hello from the mesh %s</h1>\n", v.Emoji)
	})
}
