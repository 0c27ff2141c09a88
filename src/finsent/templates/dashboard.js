(function(){
  function resizeVisible(){
    document.querySelectorAll('section.tab.active .js-plotly-plot').forEach(function(el){
      if (el.offsetParent !== null) { Plotly.Plots.resize(el); }
    });
  }
  function showTab(id){
    document.querySelectorAll('section.tab').forEach(function(s){ s.classList.toggle('active', s.id === id); });
    document.querySelectorAll('nav.tabs button').forEach(function(b){ b.classList.toggle('active', b.dataset.tab === id); });
    document.getElementById('run-picker').style.visibility = (id === 'comparison' || id === 'production') ? 'hidden' : 'visible';
    if (history.replaceState) { history.replaceState(null, '', '#' + id); }
    resizeVisible();
  }
  function showRun(i){
    document.querySelectorAll('.run-panel').forEach(function(p){ p.classList.toggle('active', p.dataset.run === String(i)); });
    resizeVisible();
  }
  document.querySelectorAll('nav.tabs button').forEach(function(b){ b.addEventListener('click', function(){ showTab(b.dataset.tab); }); });
  document.getElementById('run-select').addEventListener('change', function(e){ showRun(e.target.value); });
  // sortable tables: click a heading; cells may carry data-sort with the value to sort by
  document.querySelectorAll('table.sortable').forEach(function(table){
    table.querySelectorAll('th').forEach(function(th, col){
      th.addEventListener('click', function(){
        var asc = !th.classList.contains('asc');
        table.querySelectorAll('th').forEach(function(h){ h.classList.remove('asc', 'desc'); });
        th.classList.add(asc ? 'asc' : 'desc');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        function key(r){ var c = r.cells[col]; var v = c.dataset.sort !== undefined ? c.dataset.sort : c.textContent; var n = parseFloat(v); return isNaN(n) ? v.toLowerCase() : n; }
        rows.sort(function(a, b){ var x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); });
        rows.forEach(function(r){ body.appendChild(r); });
      });
    });
  });
  // error-table filters: by type, true label, predicted label, source and text
  document.querySelectorAll('.error-table').forEach(function(box){
    var controls = box.querySelectorAll('[data-filter]');
    function apply(){
      var f = {}; controls.forEach(function(c){ f[c.dataset.filter] = c.value.toLowerCase(); });
      var shown = 0, rows = box.querySelectorAll('tbody tr');
      rows.forEach(function(r){
        var ok = (!f.type || r.dataset.type.toLowerCase() === f.type) && (!f.true || r.dataset.true === f.true) &&
                 (!f.predicted || r.dataset.pred === f.predicted) && (!f.source || r.dataset.source.toLowerCase() === f.source) &&
                 (!f.text || r.textContent.toLowerCase().indexOf(f.text) >= 0) &&
                 (!f.entity || (r.dataset.entity || '').toLowerCase().indexOf(f.entity) >= 0);
        r.style.display = ok ? '' : 'none'; if (ok) { shown++; }
      });
      box.querySelector('[data-count]').textContent = shown + ' of ' + rows.length;
    }
    controls.forEach(function(c){ c.addEventListener('input', apply); c.addEventListener('change', apply); });
  });
  // an entity run's mixed-label view: only the texts with a wrong entity
  document.querySelectorAll('.mixed-view').forEach(function(box){
    var only = box.querySelector('[data-mixed-errors]');
    if (!only) { return; }
    only.addEventListener('change', function(){
      var shown = 0, texts = box.querySelectorAll('tbody.mixed-text');
      texts.forEach(function(t){ var ok = !only.checked || t.dataset.wrong !== '0'; t.style.display = ok ? '' : 'none'; if (ok) { shown++; } });
      box.querySelector('[data-count]').textContent = shown + ' of ' + texts.length;
    });
  });
  var start = location.hash.slice(1);
  showRun(0);
  showTab(document.getElementById(start) && document.getElementById(start).classList.contains('tab') ? start : 'overview');
})();
