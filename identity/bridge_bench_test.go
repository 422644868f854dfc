package identity_test

import (
	"net/http"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// BenchmarkProviderBridge measures what the OpenID Connect provider's
// bridge costs a request (fasthttpadaptor: a net/http request and
// response writer made of fiber's), against the same trivial handler
// answering natively, in the same run. The request is a token request's
// size: a form of a few hundred bytes with basic authentication.
func BenchmarkProviderBridge(b *testing.B) {
	body := []byte("grant_type=authorization_code&code=" + string(make([]byte, 43)) + "&redirect_uri=https%3A%2F%2Fweb.example.com%2Fcallback&code_verifier=" + string(make([]byte, 43)))
	request := func() *fasthttp.RequestCtx {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/oauth/token")
		ctx.Request.Header.SetHost("acme.localhost")
		ctx.Request.Header.SetContentType("application/x-www-form-urlencoded")
		ctx.Request.Header.Set("Authorization", "Basic YWJjOmRlZg==")
		ctx.Request.SetBody(body)
		return &ctx
	}
	answer := []byte(`{"access_token":"x","token_type":"Bearer"}`)
	b.Run("native", func(b *testing.B) {
		handler := func(ctx *fasthttp.RequestCtx) {
			_ = ctx.PostArgs().Peek("grant_type")
			ctx.SetContentType("application/json")
			ctx.SetBody(answer)
		}
		ctx := request()
		b.ReportAllocs()
		for b.Loop() {
			ctx.Response.Reset()
			handler(ctx)
		}
	})
	b.Run("bridged", func(b *testing.B) {
		handler := fasthttpadaptor.NewFastHTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_ = r.ParseForm()
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(answer)
		}))
		ctx := request()
		b.ReportAllocs()
		for b.Loop() {
			ctx.Response.Reset()
			handler(ctx)
		}
	})
}
