package identity

import (
	"bytes"
	"context"
	"errors"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/internal/httpapi"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Branding is how a tenant's hosted pages look. Empty fields: Gatehouse's
// defaults (the tenant's name, blue, no links, no logo).
type Branding struct {
	DisplayName  string `json:"display_name"`
	PrimaryColor string `json:"primary_color"` // #rrggbb
	TermsURL     string `json:"terms_url"`
	PrivacyURL   string `json:"privacy_url"`
	// Logo is where the pages load the logo from ("": none).
	Logo      string    `json:"logo,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Bounds of a logo.
const maxLogoBytes = 256 << 10

// logoPath is where a tenant's logo is served.
const logoPath = "/branding/logo"

var hexColor = regexp.MustCompile(`^#[0-9a-f]{6}$`)

func brandingFrom(name, color, terms, privacy, logoType *string, updated time.Time) *Branding {
	b := &Branding{DisplayName: deref(name), PrimaryColor: deref(color), TermsURL: deref(terms), PrivacyURL: deref(privacy), UpdatedAt: updated}
	if logoType != nil {
		b.Logo = logoPath + "?v=" + strconv.FormatInt(updated.Unix(), 36)
	}
	return b
}

// Branding returns tenant t's branding (the defaults if it set none).
func (s *Service) Branding(ctx context.Context, t *tenancy.Tenant) (*Branding, error) {
	var row queries.GetBrandingRow
	err := s.db.Once(ctx, t, func(q *queries.Queries) (err error) {
		row, err = q.GetBranding(ctx, t.ID.UUID())
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return &Branding{}, nil
	}
	if err != nil {
		return nil, err
	}
	return brandingFrom(row.DisplayName, row.PrimaryColor, row.TermsUrl, row.PrivacyUrl, row.LogoType, row.UpdatedAt), nil
}

// BrandingFor is Branding for tenant t's admins, through the admin API.
func (s *Service) BrandingFor(ctx context.Context, t *tenancy.Tenant, p *Principal, meta Meta) (*Branding, error) {
	b := &Branding{}
	err := s.AdminTx(ctx, t, p, "branding.read", meta, func(q *queries.Queries) error {
		row, err := q.GetBranding(ctx, t.ID.UUID())
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err == nil {
			b = brandingFrom(row.DisplayName, row.PrimaryColor, row.TermsUrl, row.PrivacyUrl, row.LogoType, row.UpdatedAt)
		}
		return err
	})
	return b, err
}

// SetBranding changes tenant t's branding, for its admins; the logo is
// SetLogo's. Returns Invalid naming the field at fault, Forbidden,
// Unauthorized, Unavailable.
func (s *Service) SetBranding(ctx context.Context, t *tenancy.Tenant, p *Principal, b Branding, meta Meta) (*Branding, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	var out *Branding
	err := s.AdminTx(ctx, t, p, "branding.update", meta, func(q *queries.Queries) error {
		row, err := q.SetBranding(ctx, queries.SetBrandingParams{TenantID: t.ID.UUID(), DisplayName: optional(b.DisplayName),
			PrimaryColor: optional(b.PrimaryColor), TermsUrl: optional(b.TermsURL), PrivacyUrl: optional(b.PrivacyURL)})
		if err != nil {
			return err
		}
		out = brandingFrom(row.DisplayName, row.PrimaryColor, row.TermsUrl, row.PrivacyUrl, row.LogoType, row.UpdatedAt)
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{Actor: p.User, Action: "branding.update", Target: "tenant", Outcome: Success, Meta: meta})
	})
	return out, err
}

func (b *Branding) check() error {
	if n := utf8.RuneCountInString(b.DisplayName); n > 100 || strings.TrimSpace(b.DisplayName) != b.DisplayName ||
		!utf8.ValidString(b.DisplayName) || strings.ContainsFunc(b.DisplayName, unicode.IsControl) {
		return problem.InvalidField("display_name", "must be at most 100 characters, without control characters or surrounding spaces")
	}
	b.PrimaryColor = strings.ToLower(b.PrimaryColor)
	if b.PrimaryColor != "" && !hexColor.MatchString(b.PrimaryColor) {
		return problem.InvalidField("primary_color", "must be a colour as #rrggbb")
	}
	for field, u := range map[string]string{"terms_url": b.TermsURL, "privacy_url": b.PrivacyURL} {
		if u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || p.Scheme != "https" || p.Host == "" || p.User != nil || len(u) > 2000 {
			return problem.InvalidField(field, "must be an https URL of at most 2,000 characters")
		}
	}
	return nil
}

// SetLogo stores tenant t's logo (nil: removes it), for its admins: a
// PNG, JPEG or WebP image of at most 256 KiB, recognised by its content,
// not by what the upload says it is. Returns Invalid, TooLarge,
// Forbidden, Unauthorized, Unavailable.
func (s *Service) SetLogo(ctx context.Context, t *tenancy.Tenant, p *Principal, image []byte, meta Meta) error {
	var typ *string
	if image != nil {
		if len(image) > maxLogoBytes {
			return problem.Errorf(problem.TooLarge, "the logo is over %d KiB", maxLogoBytes>>10)
		}
		kind := imageType(image)
		if kind == "" {
			return problem.Errorf(problem.Unsupported, "the logo must be a PNG, JPEG or WebP image")
		}
		typ = &kind
	}
	return s.AdminTx(ctx, t, p, "branding.logo", meta, func(q *queries.Queries) error {
		if err := q.SetLogo(ctx, queries.SetLogoParams{TenantID: t.ID.UUID(), Logo: image, LogoType: typ}); err != nil {
			return err
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{Actor: p.User, Action: "branding.logo", Target: "tenant", Outcome: Success, Meta: meta,
			Details: map[string]string{"bytes": strconv.Itoa(len(image))}})
	})
}

// imageType names the image format of b by its signature ("": none of
// those accepted). SVG is not accepted: it can carry script.
func imageType(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		return "image/png"
	case bytes.HasPrefix(b, []byte("\xff\xd8\xff")):
		return "image/jpeg"
	case len(b) > 12 && bytes.Equal(b[:4], []byte("RIFF")) && bytes.Equal(b[8:12], []byte("WEBP")):
		return "image/webp"
	}
	return ""
}

// Logo returns tenant t's logo and its type. Returns NotFound without one.
func (s *Service) Logo(ctx context.Context, t *tenancy.Tenant) ([]byte, string, error) {
	var row queries.GetLogoRow
	err := s.db.Once(ctx, t, func(q *queries.Queries) (err error) {
		row, err = q.GetLogo(ctx, t.ID.UUID())
		return queries.NotFound(err, "this tenant has no logo")
	})
	if err != nil {
		return nil, "", err
	}
	return row.Logo, deref(row.LogoType), nil
}

func (h *HTTP) brandingRoutes(r fiber.Router, admin AdminRouter) {
	r.Get(logoPath, h.handleLogo)
	admin.Get("/branding", h.handleGetBranding)
	admin.Put("/branding", h.handleSetBranding)
	admin.Put("/branding/logo", h.handleSetLogo)
	admin.Delete("/branding/logo", h.handleDeleteLogo)
}

func (h *HTTP) handleGetBranding(c *fiber.Ctx) error {
	b, err := h.svc.BrandingFor(c.UserContext(), tenancy.Of(c), PrincipalOf(c), MetaOf(c))
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(b)
}

type brandingRequest struct {
	DisplayName  string `json:"display_name"`
	PrimaryColor string `json:"primary_color"`
	TermsURL     string `json:"terms_url"`
	PrivacyURL   string `json:"privacy_url"`
}

func (h *HTTP) handleSetBranding(c *fiber.Ctx) error {
	var req brandingRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	b, err := h.svc.SetBranding(c.UserContext(), tenancy.Of(c), PrincipalOf(c), Branding{DisplayName: req.DisplayName,
		PrimaryColor: req.PrimaryColor, TermsURL: req.TermsURL, PrivacyURL: req.PrivacyURL}, MetaOf(c))
	if err != nil {
		return err
	}
	return c.JSON(b)
}

// handleSetLogo takes the image as the request body.
func (h *HTTP) handleSetLogo(c *fiber.Ctx) error {
	if len(c.Body()) == 0 {
		return problem.Errorf(problem.Invalid, "send the image as the request body")
	}
	if err := h.svc.SetLogo(c.UserContext(), tenancy.Of(c), PrincipalOf(c), c.Body(), MetaOf(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (h *HTTP) handleDeleteLogo(c *fiber.Ctx) error {
	if err := h.svc.SetLogo(c.UserContext(), tenancy.Of(c), PrincipalOf(c), nil, MetaOf(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// handleLogo serves the tenant's logo to its pages, as the image type its
// content showed, never sniffed otherwise.
func (h *HTTP) handleLogo(c *fiber.Ctx) error {
	img, typ, err := h.svc.Logo(c.UserContext(), tenancy.Of(c))
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, typ)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set("Content-Security-Policy", "default-src 'none'")
	c.Set(fiber.HeaderCacheControl, "public, max-age=300")
	return c.Send(img)
}

// pageStyle is the branding the hosted pages apply: the primary colour
// and a text colour readable on it (WCAG contrast of at least 4.5:1).
type pageStyle struct {
	Name, Primary, OnPrimary, Logo, Terms, Privacy string
}

// styleOf is tenant t's pageStyle, with Gatehouse's defaults where its
// branding sets nothing, or when it cannot be read (the pages still work).
func (h *HTTP) styleOf(ctx context.Context, t *tenancy.Tenant) pageStyle {
	st := pageStyle{Name: t.Name, Primary: "#1a56db", OnPrimary: "#ffffff"}
	b, err := h.svc.Branding(ctx, t)
	if err != nil {
		return st
	}
	if b.DisplayName != "" {
		st.Name = b.DisplayName
	}
	if b.PrimaryColor != "" {
		st.Primary, st.OnPrimary = b.PrimaryColor, readableOn(b.PrimaryColor)
	}
	st.Logo, st.Terms, st.Privacy = b.Logo, b.TermsURL, b.PrivacyURL
	return st
}

// readableOn picks white or black text for background colour hex
// (#rrggbb), whichever contrasts more (WCAG 2 relative luminance).
func readableOn(hex string) string {
	n, err := strconv.ParseUint(hex[1:], 16, 32)
	if err != nil {
		return "#ffffff"
	}
	channel := func(v uint64) float64 {
		c := float64(v) / 255
		if c <= 0.03928 {
			return c / 12.92
		}
		return math.Pow((c+0.055)/1.055, 2.4)
	}
	l := 0.2126*channel(n>>16&0xff) + 0.7152*channel(n>>8&0xff) + 0.0722*channel(n&0xff)
	if (1.05)/(l+0.05) >= (l+0.05)/0.05 {
		return "#ffffff"
	}
	return "#000000"
}
