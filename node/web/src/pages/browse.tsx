import { useEffect, useState } from 'preact/hooks';
import { api, isNotFound, librariesStore, query, settleProgress, type Item, type ItemPage } from '../api';
import { ErrorBox, Grid, Loading } from '../components';
import { kindLabel } from '../format';
import { useStore } from '../store';

const HOME_KINDS = ['movie', 'series', 'album', 'audiobook', 'book', 'photo'];
const TOP_KINDS = ['movie', 'series', 'artist', 'album', 'audiobook', 'book', 'photo'];
const FAVORITE_SHOWN = 48;

/** The caller's favourites, the latest added first. */
function loadFavorites(): Promise<Item[]> {
  return api<ItemPage>(`/items${query({ favorite: 'true', sort: 'added', order: 'desc', limit: FAVORITE_SHOWN })}`).then(
    (page) => (Array.isArray(page?.items) ? page.items : []),
  );
}

export function HomePage() {
  const [resume, setResume] = useState<Item[]>([]);
  const [recent, setRecent] = useState<Item[] | null>(null);
  const [favorites, setFavorites] = useState<Item[]>([]);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    let cancelled = false;
    settleProgress()
      .then(() => api<ItemPage>('/items/resume?limit=20'))
      .then((page) => {
        if (!cancelled) setResume(Array.isArray(page?.items) ? page.items : []);
      })
      .catch((failure) => {
        if (!cancelled && !isNotFound(failure)) setError(failure);
      });
    loadFavorites()
      .then((items) => {
        if (!cancelled) setFavorites(items);
      })
      .catch(() => {
        /* the section stays hidden */
      });
    Promise.all(
      HOME_KINDS.map((kind) =>
        api<ItemPage>(`/items${query({ type: kind, sort: 'added', order: 'desc', limit: 24 })}`).then(
          (page) => page.items,
        ),
      ),
    )
      .then((lists) => {
        if (cancelled) return;
        const all = lists.flat().filter((item) => item.parent === null || item.type === 'album');
        all.sort((a, b) => b.added_ms - a.added_ms || b.id - a.id);
        setRecent(all.slice(0, 24));
      })
      .catch((failure) => {
        if (!cancelled) {
          setError(failure);
          setRecent([]);
        }
      });
    return () => {
      cancelled = true;
    };
  }, []);

  return (
    <main class="page">
      <ErrorBox error={error} />
      {resume.length > 0 ? (
        <section data-testid="continue-watching" aria-labelledby="continue-heading">
          <h2 id="continue-heading">Continue watching</h2>
          <Grid items={resume} />
        </section>
      ) : null}
      {favorites.length > 0 ? (
        <section data-testid="favorites" aria-labelledby="favorites-heading">
          <h2 id="favorites-heading">Favourites</h2>
          <Grid items={favorites} />
        </section>
      ) : null}
      <section data-testid="recently-added" aria-labelledby="recent-heading">
        <h2 id="recent-heading">Recently added</h2>
        {recent === null ? (
          <Loading />
        ) : recent.length === 0 ? (
          <p class="muted">Nothing here yet. An administrator can add libraries under Admin → Libraries.</p>
        ) : (
          <Grid items={recent} />
        )}
      </section>
    </main>
  );
}

const PAGE = 60;

export function LibraryPage({ id }: { id: number }) {
  const libraries = useStore(librariesStore);
  const library = libraries.find((known) => known.id === id);
  const [kinds, setKinds] = useState<string[] | null>(null);
  const [kind, setKind] = useState<string>('');
  const [search, setSearch] = useState('');
  const [appliedSearch, setAppliedSearch] = useState('');
  const [sort, setSort] = useState('title');
  const [items, setItems] = useState<Item[]>([]);
  const [total, setTotal] = useState(0);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<unknown>(null);

  // Which top-level kinds this library holds.
  useEffect(() => {
    let cancelled = false;
    setKinds(null);
    setKind('');
    setItems([]);
    setError(null);
    Promise.all(
      TOP_KINDS.map((candidate) =>
        api<ItemPage>(`/items${query({ type: candidate, library: id, limit: 1 })}`).then((page) =>
          page.total > 0 ? candidate : null,
        ),
      ),
    )
      .then((found) => {
        if (cancelled) return;
        let present = found.filter((candidate): candidate is string => candidate !== null);
        // Albums under artists are not top level when artists exist.
        if (present.includes('artist')) present = present.filter((candidate) => candidate !== 'album');
        setKinds(present);
        setKind(present[0] ?? '');
        if (present.length === 0) setLoading(false);
      })
      .catch((failure) => {
        if (!cancelled) {
          setError(failure);
          setKinds([]);
          setLoading(false);
        }
      });
    return () => {
      cancelled = true;
    };
  }, [id]);

  // A debounced search.
  useEffect(() => {
    const timer = setTimeout(() => setAppliedSearch(search.trim()), 250);
    return () => clearTimeout(timer);
  }, [search]);

  const load = async (offset: number) => {
    if (!kind) return;
    setLoading(true);
    setError(null);
    try {
      const page = await api<ItemPage>(
        `/items${query({
          type: kind,
          library: id,
          search: appliedSearch || undefined,
          sort,
          order: sort === 'title' ? 'asc' : 'desc',
          limit: PAGE,
          offset,
        })}`,
      );
      const topLevel = page.items.filter((item) => item.parent === null || item.parent === undefined || kind === 'album');
      setItems((previous) => (offset === 0 ? topLevel : [...previous, ...topLevel]));
      setTotal(page.total);
    } catch (failure) {
      setError(failure);
    } finally {
      setLoading(false);
    }
  };

  useEffect(() => {
    if (kind) void load(0);
  }, [kind, appliedSearch, sort, id]);

  return (
    <main class="page">
      <header class="page-head">
        <h1>{library?.name ?? 'Library'}</h1>
        <div class="toolbar" role="search">
          <input
            type="search"
            data-testid="library-search"
            aria-label="Search this library"
            placeholder="Search…"
            value={search}
            onInput={(event) => setSearch(event.currentTarget.value)}
            onKeyDown={(event) => {
              if (event.key === 'Enter') setAppliedSearch(event.currentTarget.value.trim());
            }}
          />
          <select data-testid="library-sort" aria-label="Sort by" value={sort} onChange={(event) => setSort(event.currentTarget.value)}>
            <option value="title">Title</option>
            <option value="added">Date added</option>
            <option value="year">Year</option>
          </select>
          {kinds && kinds.length > 1 ? (
            <select data-testid="library-type" aria-label="Show" value={kind} onChange={(event) => setKind(event.currentTarget.value)}>
              {kinds.map((candidate) => (
                <option key={candidate} value={candidate}>
                  {kindLabel(candidate)}
                </option>
              ))}
            </select>
          ) : null}
        </div>
      </header>
      <ErrorBox error={error} />
      {kinds !== null && kinds.length === 0 && !error ? <p class="muted">This library is empty (or still scanning).</p> : null}
      <Grid items={items} />
      {kinds !== null && kinds.length > 0 && !loading && items.length === 0 && !error ? <p class="muted">No matches.</p> : null}
      {loading ? <Loading /> : null}
      {!loading && items.length < total ? (
        <button type="button" class="load-more" data-testid="load-more" onClick={() => load(items.length)}>
          Load more ({total - items.length} left)
        </button>
      ) : null}
    </main>
  );
}

export function SearchPage({ text }: { text: string }) {
  const [items, setItems] = useState<Item[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    let cancelled = false;
    setItems(null);
    setError(null);
    if (!text.trim()) {
      setItems([]);
      return;
    }
    api<ItemPage>(`/items${query({ search: text.trim(), limit: 200 })}`)
      .then((page) => {
        if (!cancelled) setItems(page.items.filter((item) => item.type !== 'season'));
      })
      .catch((failure) => {
        if (!cancelled) {
          setError(failure);
          setItems([]);
        }
      });
    return () => {
      cancelled = true;
    };
  }, [text]);
  return (
    <main class="page">
      <h1>Search: “{text}”</h1>
      <ErrorBox error={error} />
      {items === null ? <Loading /> : items.length === 0 ? <p class="muted">No matches.</p> : <Grid items={items} />}
    </main>
  );
}
